"""The operators' files (deploy/): every query of the Grafana dashboard and every alert rule
names metrics the code exports, and docker-compose provisions them.

The exported names come from the code itself: the serving app's registry, and the collectors
of a real ingest worker and drift monitor (built on the session's Kafka and Redis), each
family's samples named as Prometheus exposes them (a counter `x` as `x_total`, a histogram as
`x_bucket`, `x_count`, `x_sum`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector

from featurestore.config import (
    KafkaSettings,
    ModelsSettings,
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    ServingSettings,
    Settings,
)
from featurestore.repo import load_repo
from featurestore.scaffold import template_dir
from serving.metrics import ServingMetrics
from streaming.ingest.metrics import WorkerCollector
from streaming.ingest.worker import Worker
from streaming.monitor.metrics import MonitorCollector
from streaming.monitor.monitor import Monitor

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "fstore.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# Series Prometheus makes itself for every target, not exported by any code of ours.
SYNTHETIC = {"up"}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def exposed_names(collectors: Iterable[Collector]) -> dict[str, set[str]]:
    """The sample names `collectors` expose, each with the label names its samples carry (a
    registry's labelled metrics say theirs before any sample exists)."""
    names: dict[str, set[str]] = {}
    for collector in collectors:
        inner = (
            list(collector._collector_to_names)
            if isinstance(collector, CollectorRegistry)
            else [collector]
        )
        for each in inner:
            for family in each.collect():
                labels = set(getattr(each, "_labelnames", ()) or getattr(family, "_labelnames", ()))
                labels |= {label for sample in family.samples for label in sample.labels}
                for suffix in _SUFFIXES.get(family.type, ("",)):
                    extra = {"le"} if suffix == "_bucket" else set()
                    names.setdefault(family.name + suffix, set()).update(labels | extra)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers once strings, label
    matchers, ranges, grouping clauses, function calls and keywords are set aside.

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{route="/x/{m}"}[5m])) / b > 1e3'))
    ['a_bucket', 'b']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", text)
    found = re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text)
    return {name for name, call in found if not call and name.lower() not in _KEYWORDS}


def label_names(expr: str) -> tuple[list[tuple[str, str]], set[str]]:
    """The (metric, label) pairs of an expression's matchers, and the labels it groups by.

    >>> label_names('sum by (le) (rate(a_bucket{route="/x", status=~"5.."}[5m]))')
    ([('a_bucket', 'route'), ('a_bucket', 'status')], {'le'})
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    matched = [
        (metric, label)
        for metric, matchers in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", text)
        for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers)
    ]
    grouped = {
        label.strip()
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", text)
        for label in clause.split(",")
        if label.strip()
    }
    return matched, grouped


def check_query(where: str, expr: str, exported: dict[str, set[str]]) -> None:
    """Every metric `expr` reads is exported, with every label it matches or groups by."""
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - set(exported) - SYNTHETIC
    assert not unknown, f"{where} reads {sorted(unknown)}, which nothing exports"
    matched, grouped = label_names(expr)
    for metric, label in matched:
        if metric not in SYNTHETIC:
            assert label in exported[metric], f"{where}: {metric} has no label {label!r}"
    labels = set().union(*(exported.get(name, set()) for name in names))
    assert grouped <= labels, f"{where} groups by {sorted(grouped - labels)}, which no metric has"


def dashboard_queries() -> Iterator[tuple[str, str]]:
    def walk(panels: list[dict[str, object]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):  # type: ignore[attr-defined]
                yield str(panel["title"]), target["expr"]
            yield from walk(panel.get("panels", []))  # type: ignore[arg-type]

    yield from walk(json.loads(DASHBOARD.read_text())["panels"])


def alert_rules() -> list[dict[str, str]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


@pytest.fixture(scope="module")
def exported(
    kafka: KafkaSettings, redis: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, set[str]]:
    """Every sample name the server, an ingest worker and a monitor expose on /metrics."""
    root = tmp_path_factory.mktemp("exported")
    settings = Settings(
        kafka=kafka,
        redis=RedisSettings(url=redis, namespace=f"test-deploy-{uuid.uuid4().hex[:8]}"),
        offline=OfflineSettings(root=root / "offline"),
        registry=RegistrySettings(path=root / "registry"),
        models=ModelsSettings(path=root / "models"),
        serving=ServingSettings(prediction_log_topic="fstore-deploy-test.predictions"),
    )
    views = [(view, 1) for view in load_repo(template_dir("fraud")).views.values()]
    worker = Worker(settings, views)
    monitor = Monitor(settings)
    # The worker and the monitor serve the process-wide REGISTRY (process, GC, platform
    # collectors) with their own collector added; the server, its app's registry.
    return exposed_names(
        [ServingMetrics().registry, WorkerCollector(worker), MonitorCollector(monitor), REGISTRY]
    )


pytestmark = pytest.mark.integration


def test_the_code_exports_what_the_dashboard_is_about(exported: dict[str, set[str]]) -> None:
    """A sanity check of `exported` itself: the families a panel was drawn for are there."""
    for name in (
        "fstore_ingest_events_total",
        "fstore_ingest_consumer_lag",
        "fstore_ingest_watermark_seconds",
        "fstore_http_request_seconds_bucket",
        "fstore_drift_alerting",
    ):
        assert name in exported
    assert exported["fstore_ingest_consumer_lag"] == {"topic", "partition"}
    assert exported["fstore_http_request_seconds_bucket"] == {"route", "method", "status", "le"}


def test_every_dashboard_query_names_exported_metrics(exported: dict[str, set[str]]) -> None:
    queries = list(dashboard_queries())
    assert len(queries) >= 12
    for title, expr in queries:
        check_query(f"panel {title!r}", expr, exported)


def test_every_alert_rule_names_exported_metrics(exported: dict[str, set[str]]) -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "FstoreConsumerLagHigh",
        "FstoreFeaturesStale",
        "FstoreServing5xx",
        "FstoreDrift",
    }
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        check_query(f"rule {rule['alert']}", rule["expr"], exported)


def test_the_dashboard_panels_have_unique_ids_and_a_prometheus_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "prometheus", panel["title"]


def test_docker_compose_provisions_prometheus_and_grafana() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = {
        volume.split(":")[1]: (ROOT / volume.split(":")[0]).resolve()
        for name in ("prometheus", "grafana")
        for volume in services[name]["volumes"]
    }
    assert mounts["/etc/prometheus"] == PROMETHEUS.parent
    assert mounts["/var/lib/grafana/dashboards"] == DASHBOARD.parent
    provisioning = mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards" / "fstore.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"

    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["/etc/prometheus/" + ALERTS.name]
    targets = {
        target
        for job in config["scrape_configs"]
        for s in job["static_configs"]
        for target in s["targets"]
    }
    server_port = services["server"]["command"][services["server"]["command"].index("--port") + 1]
    worker_port = services["worker"]["command"][
        services["worker"]["command"].index("--metrics-port") + 1
    ]
    monitor_port = services["monitor"]["command"][
        services["monitor"]["command"].index("--metrics-port") + 1
    ]
    assert targets == {f"server:{server_port}", f"worker:{worker_port}", f"monitor:{monitor_port}"}
