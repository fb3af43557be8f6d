"""The monitor beyond the happy path: watching a view's source topic, records that are not
valid (dead-lettered, the rest still counted), and two workers of one group sharing partitions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Producer

from featurestore.config import RegistrySettings, Settings
from featurestore.drift import latest_drift
from featurestore.offline.log import OFFSET, PARTITION, TIMESTAMP, OfflineStore
from featurestore.registry import Registry
from featurestore.repo import RepoContents
from featurestore.timestamps import from_us
from streaming.errors import StreamingError
from streaming.monitor.monitor import Monitor
from streaming.topics import ensure_topic
from tests.streaming.conftest import make_view
from tests.streaming.ingest.test_crash import dead_letters
from tests.streaming.monitor.test_monitor import (
    FEATURES,
    PARTITIONS,
    T0,
    US,
    WINDOW_US,
    flush_window,
    monitor_settings,
    publish,
    read_topic,
    register_model,
    run_monitor,
    window_index,
    window_records,
)

pytestmark = pytest.mark.integration
__all__ = ["run_monitor"]  # the fixture, imported to be used here


def source_events(rng: np.random.Generator, start_us: int, count: int, factor: float) -> list[Any]:
    """Raw events of the view's source: one `count`-long window of amounts x `factor`."""
    return [
        {
            "user_id": f"u{i % 50}",
            "amount": float(rng.lognormal(3, 1) * factor),
            "merchant": f"m{i % 7}",
            "ts": from_us(start_us + i * WINDOW_US // count).isoformat(),
        }
        for i in range(count)
    ]


def produce_raw(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = Producer(settings.kafka.client_config(**{"enable.idempotence": True}))
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % PARTITIONS)
    assert producer.flush(60) == 0


def test_watching_a_source_topic_profiles_its_raw_columns_against_the_offline_log(
    settings: Settings, tmp_path: Path, topic_name: Callable[[str], str], run_monitor: Any
) -> None:
    """`fstore monitor --watch VIEW`: the reference is the view's offline log (its newest
    events); amounts x 3 in windows 2-3 alert for `amount`, restored ones resolve it."""
    config = monitor_settings(settings, tmp_path, topic_name)
    config = config.model_copy(update={"registry": RegistrySettings(path=tmp_path / "registry")})
    topic = topic_name("txns")
    ensure_topic(config.kafka, topic, partitions=PARTITIONS)
    view = make_view(topic)
    Registry(config.registry).apply(
        RepoContents(
            entities={e.name: e for e in view.entities},
            sources={view.source.name: view.source},
            views={view.name: view},
        )
    )
    registered = Registry(config.registry).get_view(view.name)
    rng = np.random.default_rng(4)
    history = 20_000
    OfflineStore(config.offline).append(
        view.name,
        registered.version,
        pa.table(
            {
                "user_id": [f"u{i % 50}" for i in range(history)],
                "amount": rng.lognormal(3, 1, history),
                "merchant": ["m0"] * history,
                TIMESTAMP: pa.array(
                    T0 - 86_400 * US + np.arange(history) * 1_000, pa.timestamp("us", tz="UTC")
                ),
                PARTITION: pa.array(np.zeros(history), pa.int32()),
                OFFSET: pa.array(np.arange(history), pa.int64()),
            }
        ),
    )
    events = [
        e
        for w in range(6)
        for e in source_events(rng, T0 + w * WINDOW_US, 600, 3.0 if w in (2, 3) else 1.0)
    ]
    end = T0 + 6 * WINDOW_US
    events += [
        {
            "user_id": "flush",
            "amount": 1.0,
            "merchant": "m",
            "ts": from_us(end + 2 * US).isoformat(),
        }
    ] * PARTITIONS
    produce_raw(config, topic, [orjson.dumps(e) for e in events] + [b"not json"])

    monitor = run_monitor(Monitor(config, group=topic_name("watch"), watch=registered), end)
    run_monitor.wait()

    name = f"view:{view.name}"
    drift = [r for r in read_topic(config.kafka, config.monitor.drift_topic) if r["model"] == name]
    assert {(r["kind"], r["column"], r["role"]) for r in drift} == {("input", "amount", "source")}
    assert sorted(window_index(r) for r in drift) == list(range(6))
    assert all(r["n"] == 600 for r in drift)
    events_sent = [
        (e["event"], e["column"], window_index(e["window"]))
        for e in read_topic(config.kafka, config.monitor.alerts_topic)
    ]
    assert events_sent == [("alert", "amount", 2), ("resolved", "amount", 4)]
    assert monitor.counters.dead_lettered == 1
    assert [reason for reason, _, _ in dead_letters(config.kafka, topic)] == ["malformed_json"]
    assert name in latest_drift(config.redis)["models"]


def test_invalid_records_are_dead_lettered_and_the_valid_ones_counted(
    settings: Settings, tmp_path: Path, topic_name: Callable[[str], str], run_monitor: Any
) -> None:
    config = monitor_settings(settings, tmp_path, topic_name)
    model = register_model(config.models)
    rng = np.random.default_rng(6)
    records = [r for w in range(3) for r in window_records(model, rng, w, 300)]
    unknown = {**records[0], "model": "nobody"}  # no such model: counted as unmonitored
    bad_feature = {**records[1], "features": {**records[1]["features"], FEATURES[0]: "12"}}
    no_score = {k: v for k, v in records[2].items() if k != "score"}
    naive = {**records[3], "at": "2026-03-01T12:00:01"}
    topic = config.serving.prediction_log_topic
    produce_raw(
        config,
        topic,
        [orjson.dumps(r) for r in records]
        + [b"{", b"[1, 2]"]
        + [orjson.dumps(r) for r in (unknown, bad_feature, no_score, naive)],
    )
    end = T0 + 3 * WINDOW_US
    publish(config.kafka, topic, flush_window(model, end + 2 * US))

    monitor = run_monitor(Monitor(config, group=topic_name("monitor")), end)
    run_monitor.wait()

    reasons = sorted(reason for reason, _, _ in dead_letters(config.kafka, topic))
    assert reasons == [
        "bad_timestamp",
        "malformed_json",
        "malformed_json",
        "missing_field",
        "wrong_type",
    ]
    assert monitor.counters.unmonitored == 1
    assert monitor.counters.counted == len(records) + PARTITIONS
    drift = read_topic(config.kafka, config.monitor.drift_topic)
    assert {r["n"] for r in drift} == {300}


def test_two_workers_of_one_group_share_the_windows(
    settings: Settings, tmp_path: Path, topic_name: Callable[[str], str]
) -> None:
    """Each worker counts its partitions into the same window accumulators; whichever closes a
    window reports all of it, once; the other's attempt finds it closed."""
    config = monitor_settings(settings, tmp_path, topic_name)
    model = register_model(config.models)
    group = topic_name("monitor")
    end = T0 + 8 * WINDOW_US
    workers = [Monitor(config, group=group, batch_size=300) for _ in range(2)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=w.run, kwargs={"until": lambda _m: stop.is_set()}, daemon=True)
        for w in workers
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while not all(w.assignment for w in workers):  # both in the group before any record
        assert time.monotonic() < deadline, "the two workers did not both join the group"
        time.sleep(0.05)
    topic = config.serving.prediction_log_topic
    rng = np.random.default_rng(8)
    publish(config.kafka, topic, [r for w in range(8) for r in window_records(model, rng, w, 900)])
    publish(config.kafka, topic, flush_window(model, end + 2 * US))
    state = workers[0].state
    while (state.snapshot().closed or 0) < end:
        assert time.monotonic() < deadline + 60, [w.counters for w in workers]
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(30)

    assert {p for w in workers for _, p in w.assignment if _ == topic} == set(range(PARTITIONS))
    assert all(w.counters.counted > 0 for w in workers)
    assert sum(w.counters.counted for w in workers) == 8 * 900 + PARTITIONS
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for record in read_topic(config.kafka, config.monitor.drift_topic):
        key = (record["column"], window_index(record))
        assert seen.setdefault(key, record) == record
    assert len(seen) == 8 * (len(FEATURES) + 1)
    assert {r["n"] for r in seen.values()} == {900}


def test_a_missing_prediction_log_is_a_clear_error(
    settings: Settings, tmp_path: Path, topic_name: Callable[[str], str]
) -> None:
    config = monitor_settings(settings, tmp_path, topic_name)
    absent = config.serving.model_copy(update={"prediction_log_topic": topic_name("absent")})
    monitor = Monitor(config.model_copy(update={"serving": absent}), group=topic_name("m"))
    with pytest.raises(StreamingError, match="once `fstore serve` logs its first prediction"):
        monitor.run(until=lambda _m: True)
    empty = config.serving.model_copy(update={"prediction_log_topic": ""})
    with pytest.raises(StreamingError, match="no prediction log to monitor"):
        Monitor(config.model_copy(update={"serving": empty}))
