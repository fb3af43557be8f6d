"""`fstore monitor` on real Kafka and Redis: the drift quality bars of issue 6.

A small LightGBM model is trained on a synthetic population and registered with the reference
profile of its training rows (`reference_profile`), as `fstore train` does. The tests publish
prediction-log records in the documented format themselves (the serving app need not run):
features drawn from the training population, scored by the model, with event times they set,
spread over three partitions. Windows are 10 s of event time, so ten windows take no wall time.

The helpers here are shared by the other monitor tests (labels, crash).
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from featurestore.config import KafkaSettings, ModelsSettings, MonitorSettings, Settings
from featurestore.drift import accumulate, compare, latest_drift
from featurestore.drift.history import drift_history, recent_alerts
from featurestore.models import (
    DatasetRef,
    FeatureSpec,
    ModelRegistry,
    Objective,
    Signature,
    reference_profile,
    roc_auc,
)
from featurestore.timestamps import from_us, parse_timestamp
from streaming.monitor.metrics import MonitorCollector
from streaming.monitor.monitor import Monitor
from streaming.topics import ensure_topic

pytestmark = pytest.mark.integration

US = 1_000_000
WINDOW_US = 10 * US
T0 = 1_772_366_400 * US  # 2026-03-01T12:00:00Z, a window boundary
FEATURES = ("txn__amount", "txn__age_days", "txn__count_1h", "txn__ratio")
PARTITIONS = 3


def population(rng: np.random.Generator, rows: int, amount_factor: float = 1.0) -> np.ndarray:
    """Rows of the four features; `ratio` is missing in 5% of them."""
    x = np.column_stack(
        [
            rng.lognormal(3, 1, rows) * amount_factor,
            rng.uniform(0, 1000, rows),
            rng.poisson(3, rows).astype(np.float64),
            rng.normal(0, 1, rows),
        ]
    )
    x[rng.random(rows) < 0.05, 3] = np.nan
    return x


def true_labels(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    signal = np.log(x[:, 0]) - 3 + np.nan_to_num(x[:, 3]) + 0.002 * (x[:, 1] - 500)
    return (signal + rng.normal(0, 1, len(x)) > 0).astype(np.float64)


@dataclass
class ServedModel:
    name: str
    version: int
    booster: lgb.Booster
    auc: float

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x), dtype=np.float64)


def register_model(config: ModelsSettings, name: str = "fraud", seed: int = 0) -> ServedModel:
    """Train on 6,000 rows; profile the first 5,000 and the scores of the last 1,000."""
    rng = np.random.default_rng(seed)
    x = population(rng, 6_000)
    y = true_labels(rng, x)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x[:5000], y[:5000], feature_name=list(FEATURES)), 30)
    scores = np.asarray(booster.predict(x[5000:]), dtype=np.float64)
    auc = roc_auc(y[5000:], scores)
    registered = ModelRegistry(config).register(
        name,
        booster.model_to_string(),
        objective=Objective.BINARY,
        signature=Signature(
            tuple(FeatureSpec(f"txn@1:{f.split('__')[1]}", f) for f in FEATURES), ("user_id",)
        ),
        label="is_fraud",
        dataset=DatasetRef("synthetic", 1, "ab" * 32),
        views={"txn": 1},
        params=params,
        metrics={"auc": auc},
        primary_metric="auc",
        profile=reference_profile(dict(zip(FEATURES, x[:5000].T, strict=True)), scores),
        who="test",
    )
    return ServedModel(name, registered.version, booster, auc)


def prediction(
    model: ServedModel,
    at_us: int,
    features: np.ndarray,
    score: float,
    user: str,
    request_id: str | None = None,
    role: str = "served",
) -> dict[str, Any]:
    """A record as serving/prediction_log.py writes it."""
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "at": from_us(at_us).isoformat(),
        "model": model.name,
        "version": model.version,
        "alias": "production" if role == "served" else "shadow",
        "role": role,
        "entities": {"user_id": user},
        "features": {
            name: None if np.isnan(value) else float(value)
            for name, value in zip(FEATURES, features.tolist(), strict=True)
        },
        "score": score,
    }


def window_records(
    model: ServedModel, rng: np.random.Generator, window: int, rows: int, amount_factor: float = 1.0
) -> list[dict[str, Any]]:
    """`rows` predictions spread evenly over window `window` (0-based from T0), in time order."""
    x = population(rng, rows, amount_factor)
    scores = model.score(x)
    start = T0 + window * WINDOW_US
    return [
        prediction(model, start + i * WINDOW_US // rows, x[i], float(scores[i]), f"u{i % 500}")
        for i in range(rows)
    ]


def publish(kafka: KafkaSettings, topic: str, records: list[dict[str, Any]]) -> None:
    """Round-robin over the partitions, so each partition's event times rise as the records'."""
    producer = Producer(kafka.client_config(**{"enable.idempotence": True, "linger.ms": 5}))
    failures: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    for i, record in enumerate(records):
        producer.produce(
            topic, orjson.dumps(record), partition=i % PARTITIONS, on_delivery=delivered
        )
        producer.poll(0)
    assert producer.flush(60) == 0 and not failures, failures


def flush_window(model: ServedModel, after_us: int) -> list[dict[str, Any]]:
    """One record per partition at `after_us`: moves every partition's watermark there."""
    x = population(np.random.default_rng(99), PARTITIONS)
    scores = model.score(x)
    return [
        prediction(model, after_us, x[i], float(scores[i]), f"flush{i}") for i in range(PARTITIONS)
    ]


def read_topic(kafka: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    """Every message on `topic` now, in partition then offset order."""
    consumer = Consumer(
        kafka.client_config(**{"group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends, assignment = {}, []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high - 1
                assignment.append(TopicPartition(topic, p, low))
        out: dict[int, list[tuple[int, dict[str, Any]]]] = {p: [] for p in ends}
        if assignment:
            consumer.assign(assignment)
        while any(not out[p] or out[p][-1][0] < end for p, end in ends.items()):
            for message in consumer.consume(1000, timeout=1.0):
                assert message.error() is None, message.error()
                out[message.partition()].append((message.offset(), orjson.loads(message.value())))
        return [record for p in sorted(out) for _, record in out[p]]
    finally:
        consumer.close()


def monitor_settings(settings: Settings, tmp_path: Path, topic: Callable[[str], str]) -> Settings:
    """The session's servers, this test's topics and key prefix, 10 s windows."""
    monitor = MonitorSettings(
        drift_topic=topic("drift"),
        alerts_topic=topic("alerts"),
        labels_topic=topic("labels"),
        window="10s",
        allowed_lateness="1s",
        sliding_windows=3,
        min_samples=200,
        min_labels=100,
        label_horizon="20s",
    )
    serving = settings.serving.model_copy(update={"prediction_log_topic": topic("predictions")})
    for name in (serving.prediction_log_topic, monitor.labels_topic):
        ensure_topic(settings.kafka, name, partitions=PARTITIONS)
    return settings.model_copy(
        update={
            "monitor": monitor,
            "serving": serving,
            "models": ModelsSettings(path=tmp_path / "models"),
        }
    )


@pytest.fixture
def run_monitor() -> Iterator[Callable[[Monitor, int], Monitor]]:
    """Run a monitor in a thread until it has closed the windows before `until_us`."""
    threads: list[tuple[Monitor, threading.Thread, list[BaseException]]] = []

    def start(monitor: Monitor, until_us: int) -> Monitor:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                monitor.run(until=lambda m: m.closed is not None and m.closed >= until_us)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append((monitor, thread, errors))
        return monitor

    def wait() -> None:
        for monitor, thread, errors in threads:
            thread.join(120)
            assert not thread.is_alive(), (
                f"the monitor did not close its windows: {monitor.counters}"
            )
            if errors:
                raise errors[0]

    start.wait = wait  # type: ignore[attr-defined]
    yield start
    for monitor, thread, _ in threads:
        monitor.stop()
        thread.join(30)


def drift_by_column(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(record["column"], []).append(record)
    return out


def window_index(record: dict[str, Any]) -> int:
    return (parse_timestamp(record["window_start"]) - T0) // WINDOW_US


# -- the quality bars -------------------------------------------------------------------------


def test_ten_windows_from_the_training_distribution_raise_no_alert(
    settings: Settings,
    tmp_path: Path,
    topic_name: Callable[[str], str],
    run_monitor: Any,
) -> None:
    config = monitor_settings(settings, tmp_path, topic_name)
    model = register_model(config.models)
    rng = np.random.default_rng(1)
    records = [r for w in range(10) for r in window_records(model, rng, w, 1_000)]
    publish(config.kafka, config.serving.prediction_log_topic, records)
    end = T0 + 10 * WINDOW_US
    publish(config.kafka, config.serving.prediction_log_topic, flush_window(model, end + 2 * US))

    monitor = run_monitor(Monitor(config, group=topic_name("monitor")), end)
    run_monitor.wait()

    drift = read_topic(config.kafka, config.monitor.drift_topic)
    assert read_topic(config.kafka, config.monitor.alerts_topic) == []
    columns = drift_by_column(drift)
    assert set(columns) == {*FEATURES, "score"}
    for column, found in columns.items():
        assert sorted(window_index(r) for r in found) == list(range(10)), column
        for record in found:
            assert record["n"] == 1_000 and record["status"] in ("ok", "warn"), record
            assert record["psi"] < 0.1 and record["js"] < 0.1, record
    ratio = [r["missing_rate"] for r in columns["txn__ratio"]]
    assert 0.02 < min(ratio) and max(ratio) < 0.08  # the 5% of missing ratios
    # The sliding window merges the last three tumbling ones.
    assert [r["sliding"]["n"] for r in columns["txn__amount"]] == [1000, 2000] + [3000] * 8
    assert monitor.counters.counted == 10_000 + PARTITIONS and monitor.counters.late == 0

    # The latest state for the API: the newest window of each column, and no open alert.
    state = latest_drift(config.redis, model=model.name)["models"][model.name]
    assert state["alerts"] == []
    assert {r["column"] for r in state["records"]} == {*FEATURES, "score"}
    assert {window_index(r) for r in state["records"]} == {9}

    # Prometheus: one gauge sample per column, from the newest window.
    families = {f.name: f for f in MonitorCollector(monitor).collect()}
    psi = {s.labels["column"]: s.value for s in families["fstore_drift_psi"].samples}
    assert set(psi) == {*FEATURES, "score"} and max(psi.values()) < 0.1
    assert sum(s.value for s in families["fstore_drift_alerting"].samples) == 0


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server that keeps the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    server.shutdown()
    thread.join(10)


def test_a_tripled_feature_alerts_for_it_alone_and_resolves_when_restored(
    settings: Settings,
    tmp_path: Path,
    topic_name: Callable[[str], str],
    run_monitor: Any,
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    """amount x 3 in windows 3-5: an alert for amount in window 3 or 4, none for the other
    features, a `resolved` once it is restored (window 6 or 7). The model's score moves with
    amount (the model leans on it), so the score's own episode opens and closes too. Each
    event also goes to the webhook and to the command (the retraining hook)."""
    config = monitor_settings(settings, tmp_path, topic_name)
    url, posted = webhook
    hook = tmp_path / "hook.jsonl"
    script = f"import sys; open({str(hook)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"
    config.monitor.webhook_url = url
    config.monitor.command = [sys.executable, "-c", script]
    model = register_model(config.models)
    rng = np.random.default_rng(2)
    factor = {3: 3.0, 4: 3.0, 5: 3.0}
    records = [
        r for w in range(10) for r in window_records(model, rng, w, 1_000, factor.get(w, 1.0))
    ]
    publish(config.kafka, config.serving.prediction_log_topic, records)
    end = T0 + 10 * WINDOW_US
    publish(config.kafka, config.serving.prediction_log_topic, flush_window(model, end + 2 * US))

    monitor = run_monitor(Monitor(config, group=topic_name("monitor")), end)
    run_monitor.wait()

    events = read_topic(config.kafka, config.monitor.alerts_topic)
    features = [e for e in events if e["kind"] == "feature"]
    assert [(e["event"], e["column"]) for e in features] == [
        ("alert", "txn__amount"),
        ("resolved", "txn__amount"),
    ], events
    alert, resolved = features
    assert window_index(alert["window"]) in (3, 4)
    assert window_index(resolved["window"]) in (6, 7)
    assert resolved["episode"] == alert["episode"]
    assert {"psi", "js"} <= set(alert["window"]["breaches"])
    score = [(e["event"], window_index(e["window"])) for e in events if e["kind"] == "score"]
    assert score == [("alert", 3), ("resolved", 6)], score
    # Every drift record of the other features stayed out of alert.
    for record in read_topic(config.kafka, config.monitor.drift_topic):
        if record["kind"] == "feature" and record["column"] != "txn__amount":
            assert record["status"] != "alert", record
    state = latest_drift(config.redis, model=model.name)["models"][model.name]
    assert state["alerts"] == []  # the episodes are closed

    # The same events reached the webhook, and the command on its stdin (it runs detached).
    assert sorted(map(orjson.dumps, posted)) == sorted(map(orjson.dumps, events))
    monitor.sink.close()
    lines = hook.read_text().splitlines() if hook.exists() else []
    assert sorted(orjson.loads(line)["episode"] for line in lines) == sorted(
        e["episode"] for e in events
    )
    assert monitor.sink.failures == 0
    # The dashboard's lists: every window's records, and the events.
    history = drift_history(config.redis, model.name, 1_000)
    assert len(history) == 10 * (len(FEATURES) + 1)
    assert sorted(e["episode"] for e in recent_alerts(config.redis)) == sorted(
        e["episode"] for e in events
    )


def assert_drift_records(
    config: Settings, model: Any, records: list[Any], windows: int, per_window: int
) -> None:
    """Every drift record on the topic (a window may be there twice if a monitor died between
    sending and committing, never differently) equals the statistics computed here from the
    published rows: `per_window` records in each of `windows` windows, in order."""
    profile = ModelRegistry(config.models).get(model.name, model.version).profile
    # (None, a missing feature, becomes NaN.)
    values = np.array(
        [[r["features"][f] for f in FEATURES] + [r["score"]] for r in records], dtype=np.float64
    )
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for record in read_topic(config.kafka, config.monitor.drift_topic):
        key = (record["column"], window_index(record))
        assert seen.setdefault(key, record) == record, "a window was reported twice, differently"
    assert len(seen) == windows * (len(FEATURES) + 1)
    for (column, window), record in seen.items():
        j = FEATURES.index(column) if column in FEATURES else len(FEATURES)
        reference = profile["features"][column] if column in FEATURES else profile["score"]
        rows = values[window * per_window : (window + 1) * per_window, j]
        want = compare(
            reference, accumulate(reference["edges"], rows), config.monitor.thresholds, 200
        )
        assert record["n"] == per_window, (column, window, record["n"])
        for name in ("psi", "js", "ks", "missing_rate", "mean", "min", "max"):
            assert record[name] == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-12), name


def test_records_with_caller_sent_features_cannot_raise_an_alert(
    settings: Settings,
    tmp_path: Path,
    topic_name: Callable[[str], str],
    run_monitor: Any,
) -> None:
    config = monitor_settings(settings, tmp_path, topic_name)
    model = register_model(config.models)
    rng = np.random.default_rng(5)
    records = []
    for w in range(3):
        records += window_records(model, rng, w, 1_000)
        # A caller sends amounts x3 itself: drift enough to alert, were they counted.
        for record in window_records(model, rng, w, 1_000, amount_factor=3.0):
            records.append(record | {"request_features": ["txn__amount"]})
    records.sort(key=lambda r: r["at"])
    publish(config.kafka, config.serving.prediction_log_topic, records)
    end = T0 + 3 * WINDOW_US
    publish(config.kafka, config.serving.prediction_log_topic, flush_window(model, end + 2 * US))

    monitor = run_monitor(Monitor(config, group=topic_name("monitor")), end)
    run_monitor.wait()

    assert read_topic(config.kafka, config.monitor.alerts_topic) == []
    amount = drift_by_column(read_topic(config.kafka, config.monitor.drift_topic))["txn__amount"]
    assert [r["n"] for r in amount] == [1_000] * 3 and max(r["psi"] for r in amount) < 0.1
    assert monitor.counters.request_fed == 3_000
    assert monitor.counters.counted == 3_000 + PARTITIONS
    families = {f.name: f for f in MonitorCollector(monitor).collect()}
    outcomes = {s.labels["outcome"]: s.value for s in families["fstore_monitor_records"].samples}
    assert outcomes["request_fed"] == 3_000
