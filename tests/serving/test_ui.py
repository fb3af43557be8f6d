"""The dashboard at /ui: its data sources on real Redis and Kafka, its JSON endpoints, and the
page itself in a real headless Chromium (Debian's `chromium`, driven by Playwright) against a
real server, with a screenshot kept under test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import orjson
import pytest
import uvicorn
from confluent_kafka import Consumer, Producer, TopicPartition
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram
from pydantic import SecretStr

from featurestore.config import KafkaSettings, RedisSettings, ServingSettings, Settings
from featurestore.drift.history import (
    alert_log_key,
    drift_history,
    history_key,
    recent_alerts,
    record_alerts,
    record_history,
)
from featurestore.drift.state import alerts_key, field, latest_key, models_key
from featurestore.errors import OnlineStoreError
from featurestore.services import free_port
from serving import create_app
from serving.ui.lag import LagProbe, lag
from serving.ui.traffic import PREDICT_ROUTE, TrafficSampler, quantile
from streaming.topics import ensure_topic
from tests.conftest import unavailable
from tests.redis_target import client_of
from tests.serving.conftest import USERS, World

pytestmark = pytest.mark.integration

READ = "read-secret"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WINDOWS = 6


# ---- featurestore/drift/history.py on a real Redis


def _record(column: str, window: int, psi: float, version: int = 1) -> dict[str, Any]:
    """A drift record shaped as the monitor writes it (streaming/monitor_report.py)."""
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=window)
    return {
        "model": "fraud",
        "version": version,
        "role": "served",
        "kind": "feature",
        "column": column,
        "window_start": start.isoformat(),
        "window_end": (start + timedelta(minutes=1)).isoformat(),
        "n": 500,
        "missing_rate": 0.0,
        "mean": 1.0,
        "std": 0.5,
        "min": 0.0,
        "max": 3.0,
        "psi": psi,
        "js": psi / 3,
        "ks": psi / 4,
        "status": "alert" if psi > 0.25 else "warn" if psi > 0.1 else "ok",
        "breaches": ["psi"] if psi > 0.25 else [],
        "thresholds": {"psi_warn": 0.1, "psi_alert": 0.25, "js_alert": 0.1, "ks_alert": None},
        "sliding": {"window_start": start.isoformat(), "psi": psi},
    }


def _event(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """An alert event shaped as streaming/alerts.py sends it."""
    identity = {k: record[k] for k in ("model", "version", "role", "kind", "column")}
    since = record["window_start"]
    episode = "|".join(str(v) for v in identity.values()) + f"|{since}"
    return {"event": kind, "episode": episode, **identity, "since": since, "window": record}


def test_drift_history_is_oldest_first_capped_and_one_record_per_window(
    redis: str, key_prefix: str
) -> None:
    namespace = key_prefix.rstrip(":")
    config = RedisSettings(url=redis, namespace=namespace)
    client = client_of(redis)
    records = [_record(c, w, 0.01 * w) for w in range(5) for c in ("a", "b")]

    assert drift_history(config, "fraud") == []
    record_history(client, namespace, "fraud", records[:6])  # windows close in batches
    record_history(client, namespace, "fraud", records[6:])
    record_history(client, namespace, "fraud", [])  # nothing to append: no-op
    assert drift_history(config, "fraud", 100) == records
    # A monitor that died after appending and before committing appends the same windows again.
    record_history(client, namespace, "fraud", records[-2:])
    assert client.llen(history_key(namespace, "fraud")) == len(records) + 2
    assert drift_history(config, "fraud", 100) == records

    record_history(client, namespace, "small", records, max_records=4)
    assert client.llen(history_key(namespace, "small")) == 4
    assert drift_history(config, "small", 100) == records[-4:]
    assert drift_history(config, "small", 3) == records[-3:]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        drift_history(config, "small", 0)
    with pytest.raises(ValueError, match="must be at least 1"):
        record_history(client, namespace, "small", records, max_records=0)


def test_recent_alerts_are_newest_first_without_repeats(redis: str, key_prefix: str) -> None:
    namespace = key_prefix.rstrip(":")
    config = RedisSettings(url=redis, namespace=namespace)
    client = client_of(redis)
    opened = _event("alert", _record("a", 1, 0.4))
    resolved = _event("resolved", _record("a", 3, 0.02))
    other = _event("alert", _record("b", 2, 0.5))

    assert recent_alerts(config) == []
    record_alerts(client, namespace, [opened, other])
    record_alerts(client, namespace, [other])  # sent twice (at least once)
    record_alerts(client, namespace, [resolved])
    assert recent_alerts(config) == [resolved, other, opened]
    assert recent_alerts(config, limit=1) == [resolved]
    record_alerts(client, namespace, [opened], max_events=2)
    assert client.llen(alert_log_key(namespace)) == 2


def test_an_unreachable_redis_is_an_online_store_error() -> None:
    config = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", namespace="nowhere")
    with pytest.raises(OnlineStoreError, match="unreachable"):
        drift_history(config, "fraud")
    with pytest.raises(OnlineStoreError, match="unreachable"):
        recent_alerts(config)


# ---- serving/ui/traffic.py and lag.py


def test_quantile_is_linear_inside_buckets_like_prometheus() -> None:
    bounds = (0.001, 0.01, 0.1, float("inf"))
    assert quantile(bounds, (0, 0, 0, 0), 0.5) is None
    assert quantile(bounds, (10, 10, 10, 10), 0.5) == pytest.approx(0.0005)
    assert quantile(bounds, (0, 0, 4, 4), 0.25) == pytest.approx(0.01 + 0.09 * 0.25)
    assert quantile(bounds, (0, 0, 0, 5), 0.99) == 0.1  # +Inf bucket: the highest finite bound
    # Against the exact quantile of random latencies: inside the same bucket.
    rng = np.random.default_rng(3)
    values = rng.exponential(0.02, 2000)
    edges = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, np.inf)
    cumulative = [float((values <= e).sum()) for e in edges]
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(values, q))
        bucket = next(i for i, e in enumerate(edges) if exact <= e)
        low = edges[bucket - 1] if bucket else 0.0
        assert low <= quantile(edges, cumulative, q) <= edges[bucket]  # type: ignore[operator]


def test_traffic_sampler_gives_rate_errors_and_percentiles_of_the_predict_route() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "t_seconds",
        "test",
        ["route", "method", "status"],
        buckets=(0.001, 0.01, 0.1, 1.0),
        registry=registry,
    )
    sampler = TrafficSampler(histogram, min_step_s=0.0)
    assert sampler.summary() == {
        "route": PREDICT_ROUTE,
        "totals": {"requests": 0, "errors": 0},
        "series": [],
    }
    sampler.sample()  # before any request: no bucket of the route yet
    for _ in range(8):
        histogram.labels(PREDICT_ROUTE, "POST", "200").observe(0.005)
    for _ in range(2):
        histogram.labels(PREDICT_ROUTE, "POST", "503").observe(0.5)
    histogram.labels("/v1/models", "GET", "200").observe(0.05)  # another route: not counted
    sampler.sample()
    for _ in range(4):
        histogram.labels(PREDICT_ROUTE, "POST", "200").observe(0.0005)
    sampler.sample()

    summary = sampler.summary()
    assert summary["totals"]["requests"] == 14 and summary["totals"]["errors"] == 2
    first, second = summary["series"]
    assert first["rate"] > 0 and first["error_rate"] > 0 and second["error_rate"] == 0
    assert first["rate"] / first["error_rate"] == pytest.approx(5)
    assert first["mean_ms"] == pytest.approx((8 * 5 + 2 * 500) / 10)
    assert 1 <= first["p50_ms"] <= 10 and 100 <= first["p99_ms"] <= 1000
    assert second["p50_ms"] <= 1 and second["p99_ms"] <= 1  # only the last 4 requests


def test_lag_counts_what_the_positions_have_not_applied() -> None:
    ends = {0: (0, 10), 1: (5, 8), 2: (0, 0)}
    assert lag(ends, {}) == 10 + 3  # nothing read: all the topic keeps
    assert lag(ends, {0: 9, 1: 7, 2: -1}) == 0
    assert lag(ends, {0: 4, -1: 123}) == 5 + 3  # -1: an import's pseudo-partition
    assert lag(ends, {1: 2}) == 10 + 3  # older than the log start: from `low`


def test_lag_probe_reads_end_offsets_and_says_why_when_it_cannot(
    kafka: KafkaSettings, topic_name: Callable[[str], str]
) -> None:
    topic = topic_name("events")
    ensure_topic(kafka, topic, partitions=2)
    producer = Producer(kafka.client_config())
    for i in range(5):
        producer.produce(topic, b"{}", partition=i % 2)
    assert producer.flush(30) == 0
    missing = topic_name("missing")

    found = LagProbe(kafka).ends([topic, missing])
    assert found[topic].error is None and found[topic].ends == {0: (0, 3), 1: (0, 2)}
    assert found[missing].ends is None and "does not exist" in str(found[missing].error)

    down = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")
    unknown = LagProbe(down, timeout_s=1.0).ends([topic])[topic]
    assert unknown.ends is None and "did not answer" in str(unknown.error)


# ---- the JSON endpoints, in process


@pytest.fixture
def read_settings(serving_settings: Settings) -> Settings:
    """The serving settings with a read token and no Kafka prediction log to wait on."""
    return serving_settings.model_copy(
        update={
            "serving": serving_settings.serving.model_copy(update={"read_token": SecretStr(READ)}),
        }
    )


@pytest.fixture
def drift_state(world: World) -> Iterator[dict[str, Any]]:
    """Drift history, the newest windows and an open alert of model `fraud`, as the monitor
    leaves them in the world's namespace; removed afterwards (the world is shared)."""
    namespace = world.settings.redis.namespace
    client = client_of(world.settings.redis.url)
    drifting = world.names[1]
    records = [
        _record(name, w, 0.6 * w / (WINDOWS - 1) if name == drifting else 0.02 + 0.01 * (w % 2))
        for w in range(WINDOWS)
        for name in world.names
    ]
    newest = records[-len(world.names) :]
    alert = _event("alert", next(r for r in newest if r["column"] == drifting))
    record_history(client, namespace, "fraud", records)
    record_alerts(client, namespace, [alert])
    client.sadd(models_key(namespace), "fraud")
    for r in newest:
        client.hset(
            latest_key(namespace, "fraud"),
            field(1, "served", "feature", r["column"]),
            orjson.dumps(r),
        )
    client.hset(
        alerts_key(namespace, "fraud"), field(1, "served", "feature", drifting), orjson.dumps(alert)
    )
    yield {"records": records, "drifting": drifting, "alert": alert}
    client.delete(
        history_key(namespace, "fraud"),
        alert_log_key(namespace),
        latest_key(namespace, "fraud"),
        alerts_key(namespace, "fraud"),
    )
    client.srem(models_key(namespace), "fraud")


def _source_backlog(world: World, count: int) -> int:
    """Put `count` events on the view's source topic (no worker reads it in these tests) and
    return how many the topic holds, asked of Kafka directly."""
    kafka = world.settings.kafka
    topic = f"txns-{world.settings.redis.namespace}"
    ensure_topic(kafka, topic, partitions=1)
    producer = Producer(kafka.client_config())
    now = datetime.now(UTC).isoformat()
    for i in range(count):
        producer.produce(topic, orjson.dumps({"user_id": USERS[i], "amount": 1.0, "ts": now}))
    assert producer.flush(30) == 0
    consumer = Consumer(kafka.client_config(**{"group.id": "test-ui-backlog"}))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    return int(high - low)


def test_overview_and_drift_need_the_read_token_and_report_every_section(
    read_settings: Settings, world: World, drift_state: dict[str, Any]
) -> None:
    backlog = _source_backlog(world, 7)
    with TestClient(create_app(read_settings)) as client:
        for path in ("/ui/api/overview", "/ui/api/drift"):
            refused = client.get(path)
            assert refused.status_code == 401, refused.text
            assert "API key" in refused.json()["detail"]
            assert refused.headers["WWW-Authenticate"] == "Bearer"
        headers = {"Authorization": f"Bearer {READ}"}
        for _ in range(3):
            assert client.post(
                "/v1/predict/fraud", json={"entities": {"user_id": "u1"}}, headers=headers
            ).is_success
        body = client.get("/ui/api/overview", headers=headers).json()
        drift = client.get("/ui/api/drift", headers=headers).json()

    (view,) = body["views"]["data"]
    assert body["views"]["error"] is None
    assert (view["name"], view["version"], view["lag"], view["lag_error"]) == (
        "user_txn",
        1,
        backlog,
        None,
    )
    assert backlog >= 7
    # The imported events are 50 to 14 minutes old (conftest.py).
    assert 14 * 60 - 5 <= view["freshness_s"] <= 2 * 3600
    (model,) = body["models"]["data"]
    assert model["aliases"] == {"production": 1} and model["traffic"] == {"production": 1.0}
    assert [v["version"] for v in model["versions"]] == [1, 2]
    assert [v["rows_scored"] for v in model["versions"]] == [3, 0]
    assert [v["loaded"] for v in model["versions"]] == [True, False]
    assert [h["action"] for h in model["history"]] == ["alias", "register", "register"]
    assert body["traffic"]["totals"]["requests"] == 3
    assert body["alerts"]["data"]["open"] == [drift_state["alert"]]
    assert body["alerts"]["data"]["recent"] == [drift_state["alert"]]

    fraud = drift["models"]["data"]["fraud"]
    assert len(fraud["history"]) == len(drift_state["records"])
    assert [r["psi"] for r in fraud["history"] if r["column"] == drift_state["drifting"]] == [
        r["psi"] for r in drift_state["records"] if r["column"] == drift_state["drifting"]
    ]
    assert {r["column"] for r in fraud["latest"]} == set(world.names)
    assert fraud["thresholds"]["psi_alert"] == 0.25


def test_the_page_is_served_and_kafka_down_shows_as_unknown_lag(serving_settings: Settings) -> None:
    settings = serving_settings.model_copy(
        update={
            "kafka": KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}"),
            "serving": ServingSettings(prediction_log_topic=""),
        }
    )
    with TestClient(create_app(settings)) as client:
        page = client.get("/ui")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'src="/ui/static/app.js"' in page.text and "{{root}}" not in page.text
        script = client.get("/ui/static/app.js")
        assert script.status_code == 200 and "renderOverview" in script.text
        assert client.get("/ui/static/app.css").status_code == 200
        assert client.get("/ui/static/nope.js").status_code == 404
        plotly = client.get("/ui/vendor/plotly.min.js")
        assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
        assert "Plotly" in plotly.text[:5000]
        body = client.get("/ui/api/overview").json()  # no read token configured
    (view,) = body["views"]["data"]
    assert view["lag"] is None and "did not answer" in view["lag_error"]
    assert view["freshness_s"] is not None  # Redis still answers


# ---- the page in a real Chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed with apt-get the way featurestore/services installs
    redis-server (when missing, as root); the browser tests skip when it cannot be had, and
    fail under CI (`unavailable`)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        unavailable(
            f"{CHROMIUM} is missing and this user cannot install it: `sudo apt-get install "
            "chromium` (Debian/Ubuntu) to run the dashboard's browser test"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            unavailable(
                f"`{' '.join(argv)}` exited {result.returncode}; install chromium by hand:\n"
                f"{result.stdout[-1000:]}{result.stderr[-1000:]}"
            )
    assert Path(CHROMIUM).exists(), "`apt-get install chromium` gave no /usr/bin/chromium"
    return CHROMIUM


@contextmanager
def _served(app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn on a free loopback port, in a thread of this process."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn-ui-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting: see the log above"
            assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def _count(page: Any, selector: str) -> int:
    return int(page.locator(selector).count())


def test_dashboard_renders_live_data_in_chromium(
    chromium: str,
    read_settings: Settings,
    world: World,
    drift_state: dict[str, Any],
    tmp_path: Path,
) -> None:
    try:
        from playwright import sync_api
    except ImportError as exc:
        unavailable(f"playwright (the dev extra) is needed to drive chromium: {exc}")
    backlog = _source_backlog(world, 5)
    drifting = drift_state["drifting"]
    page_errors: list[str] = []
    with _served(create_app(read_settings)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data-dir
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(f"{url}/ui")

            # A (deprecated) read token is configured: the page asks for a key, and says when
            # it is wrong.
            page.wait_for_selector("#token-form", state="visible", timeout=30_000)
            page.fill("#token-input", "wrong")
            page.click("#token-form button")
            page.wait_for_function(
                "document.getElementById('token-error').textContent.includes('unknown API key')",
                timeout=30_000,
            )
            page.fill("#token-input", READ)
            page.click("#token-form button")
            page.wait_for_selector("#views-table tbody tr", timeout=30_000)

            # Scoring traffic while the page polls: the rate chart gets points above zero.
            headers = {"Authorization": f"Bearer {READ}"}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                for i in range(40):
                    body = {"entities": {"user_id": USERS[i % len(USERS)]}}
                    response = client.post("/v1/predict/fraud", json=body)
                    assert response.status_code == 200, response.text
            page.wait_for_function(
                """() => {
                    const rate = document.getElementById('rate-chart');
                    const points = rate.querySelectorAll('.scatterlayer .trace path.point');
                    return rate.data && rate.data[0].y.some((y) => y > 0) && points.length > 2;
                }""",
                timeout=60_000,
            )
            page.wait_for_function(
                "document.querySelectorAll('#latency-chart .scatterlayer path.point').length > 0",
                timeout=30_000,
            )
            # Drift per feature over time: one line per feature, a point per window.
            page.wait_for_function(
                f"""() => document.querySelectorAll(
                    '#drift-chart-fraud .scatterlayer .trace').length === {len(world.names)}""",
                timeout=30_000,
            )
            points = _count(page, "#drift-chart-fraud .scatterlayer path.point")
            assert points == len(world.names) * WINDOWS
            legend = page.locator("#drift-chart-fraud .legend").text_content() or ""
            assert all(name in legend for name in world.names), legend

            view_row = page.locator("#views-table tbody tr").first.inner_text()
            assert "user_txn" in view_row and str(backlog) in view_row
            assert "min" in view_row  # freshness: the newest imported event is minutes old
            assert _count(page, "#versions-fraud tbody tr") == 2
            assert _count(page, "#history-fraud tbody tr") == 3
            versions = page.locator("#versions-fraud").inner_text()
            assert "production" in versions and "100 %" in versions
            page.wait_for_function(
                "document.querySelector('#versions-fraud tbody tr:last-child td:last-child')"
                ".textContent === '40'",
                timeout=30_000,
            )
            open_alert = page.locator("#alerts-open tbody tr").first.inner_text()
            assert drifting in open_alert and "open" in open_alert
            assert _count(page, "#alerts-recent tbody tr") == 1
            latest = page.locator(f"#drift-latest-fraud tr:has-text('{drifting}')").inner_text()
            assert "alert" in latest

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
        finally:
            browser.close()
    assert page_errors == []
    assert (ARTIFACTS / "ui.png").stat().st_size > 10_000
