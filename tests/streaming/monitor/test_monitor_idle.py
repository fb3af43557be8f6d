"""An idle partition no longer stalls the monitor, and its finished state expires.

The prediction log has two partitions; every record goes to partition 0 and partition 1 never
gets one. Windows used to close only once every partition had advanced: never, here. Now
partition 1 stops holding the watermark back after `monitor.idle_timeout`; the windows close
then (not before), each reported with exactly the rows of the reference computation; a record
partition 1 brings afterwards into a closed window counts as late. The closed windows kept for
the sliding statistics carry a TTL, the positions and the open window none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from featurestore.config import Settings
from streaming.monitor.metrics import MonitorCollector
from streaming.monitor.monitor import Monitor
from streaming.monitor.state import finished_ttl_ms
from streaming.topics import ensure_topic
from tests.redis_target import client_of
from tests.streaming.monitor.test_monitor import (
    T0,
    US,
    WINDOW_US,
    assert_drift_records,
    flush_window,
    monitor_settings,
    register_model,
    window_records,
)

pytestmark = pytest.mark.integration

IDLE_S = 6
WINDOWS = 5
PER_WINDOW = 400


def publish_to(settings: Settings, topic: str, partition: int, records: list[Any]) -> None:
    producer = Producer(settings.kafka.client_config(**{"enable.idempotence": True}))
    for record in records:
        producer.produce(topic, orjson.dumps(record), partition=partition)
    assert producer.flush(60) == 0


def test_an_idle_partition_stops_holding_windows_back_after_the_idle_timeout(
    settings: Settings, tmp_path: Path, topic_name: Callable[[str], str]
) -> None:
    ensure_topic(settings.kafka, topic_name("predictions"), partitions=2)
    config = monitor_settings(settings, tmp_path, topic_name)
    config.monitor.labels_topic = ""
    config.monitor.idle_timeout = f"{IDLE_S}s"
    topic = config.serving.prediction_log_topic
    model = register_model(config.models)
    rng = np.random.default_rng(4)
    records = [r for w in range(WINDOWS) for r in window_records(model, rng, w, PER_WINDOW)]
    end = T0 + WINDOWS * WINDOW_US
    publish_to(config, topic, 0, records + flush_window(model, end + 2 * US)[:1])

    group = topic_name("monitor")
    monitor = Monitor(config, group=group, batch_size=500)
    began = monitor.idleness.started  # the idle clock of a partition that never had a record
    errors: list[BaseException] = []

    def run() -> None:
        try:
            monitor.run(until=lambda m: m.counters.late >= 1)
        except BaseException as exc:  # raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        counted_at = None
        deadline = time.monotonic() + 90
        while monitor.closed is None or monitor.closed < end:
            assert time.monotonic() < deadline and not errors, (monitor.counters, errors)
            if counted_at is None and monitor.counters.counted == len(records) + 1:
                counted_at = time.monotonic()
                # Everything is counted; partition 1 has been silent for less than the timeout.
                if counted_at - began < IDLE_S - 1:
                    assert monitor.closed is None, "a window closed before the idle timeout"
            time.sleep(0.05)
        closed_after = time.monotonic() - began
        assert closed_after >= IDLE_S, closed_after
        print(f"windows closed {closed_after:.1f}s after the monitor started")
        assert 1 in monitor.idle  # (partition 0 too, once it has been quiet that long)
        families = {f.name: f for f in MonitorCollector(monitor).collect()}
        assert families["fstore_monitor_idle_partitions"].samples[0].value == len(monitor.idle)

        # A record partition 1 brings now, into a closed window, is late (the trade-off).
        publish_to(config, topic, 1, window_records(model, rng, 2, 1))
        thread.join(60)
        assert not thread.is_alive() and not errors, errors
    finally:
        monitor.stop()
        thread.join(30)

    assert monitor.counters.late == 1
    assert monitor.counters.counted == len(records) + 1
    assert_drift_records(config, model, records, WINDOWS, PER_WINDOW)

    # Expiry: closed windows kept for the sliding statistics (3 x 10 s: windows 3 and 4) expire;
    # what replay needs (positions, markers, the open window of the flush record) does not.
    client = client_of(config.redis.url)
    prefix = monitor.state.prefix
    ttl_ms = finished_ttl_ms(config.monitor)
    kept = [monitor.state.window_key(T0 + w * WINDOW_US) for w in (3, 4)]
    for key in kept:
        assert 0 < client.pttl(key) <= ttl_ms, key
    assert not client.exists(*(monitor.state.window_key(T0 + w * WINDOW_US) for w in (0, 1, 2)))
    assert client.pttl(monitor.state.window_key(end)) == -1  # open: never expires
    assert client.pttl(monitor.state.state_key) == -1
    assert client.pttl(f"{prefix}:windows") == -1
