"""Delayed labels joined with the prediction log: the live AUC equals the AUC by its definition
(pairwise, ties one half, as scikit-learn computes it) on the same rows, per model version and
role; a window of wrong labels raises a performance alert.

Version 1 serves and version 2 runs in shadow on every request. Most labels name their request;
batch requests (two users) get labels that name the user too; some labels name only the user;
some come after the 20 s horizon, and some for requests that never were: neither joins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from featurestore.config import Settings
from featurestore.models import log_loss
from featurestore.timestamps import from_us, parse_timestamp
from streaming.monitor.monitor import Monitor
from streaming.monitor.state import finished_ttl_ms
from tests.redis_target import client_of
from tests.streaming.monitor.test_monitor import (
    FEATURES,
    PARTITIONS,
    T0,
    US,
    WINDOW_US,
    flush_window,
    monitor_settings,
    population,
    prediction,
    publish,
    read_topic,
    register_model,
    run_monitor,
    true_labels,
    window_index,
)

pytestmark = pytest.mark.integration
__all__ = ["run_monitor"]  # the fixture, imported to be used here

HORIZON_US = 20 * US
WINDOWS = 6
REQUESTS = 400  # per window
FLIPPED = 4  # the window whose labels are all wrong


@dataclass
class Row:
    version: int
    role: str
    at: int
    score: float
    user: str


def auc_by_definition(pairs: list[tuple[float, float]]) -> float:
    positives = [s for s, y in pairs if y == 1]
    negatives = [s for s, y in pairs if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s}s for {what}"
        time.sleep(0.05)


def test_live_auc_equals_the_definition_on_the_joined_rows(
    settings: Settings, tmp_path: Path, topic_name: Callable[[str], str], run_monitor: Any
) -> None:
    config = monitor_settings(settings, tmp_path, topic_name)
    # A window of ~380 labels measures AUC to about +-0.02: a 15% tolerance keeps the right
    # labels far from alerting, while the flipped window (AUC ~ 1 - validation) is far below.
    config.monitor.performance_tolerance = 0.15
    served = register_model(config.models, seed=0)
    shadow = register_model(config.models, seed=5)
    assert (served.version, shadow.version) == (1, 2)
    rng = np.random.default_rng(11)

    records: list[dict[str, Any]] = []
    rows: dict[str, list[Row]] = {}  # request id -> its rows
    labels: list[dict[str, Any]] = []
    expected: dict[tuple[int, str, int], list[tuple[float, float]]] = {}
    unjoinable = 0
    for window in range(WINDOWS):
        start = T0 + window * WINDOW_US
        for i in range(REQUESTS):
            at = start + i * WINDOW_US // REQUESTS
            request = f"r{window}-{i}"
            batch = i % 10 == 0  # every tenth request scores two users
            users = [f"u{window}-{i}-a", f"u{window}-{i}-b"] if batch else [f"u{window}-{i}"]
            x = population(rng, len(users))
            truth = true_labels(rng, x)
            for model, role in ((served, "served"), (shadow, "shadow")):
                scores = model.score(x)
                for j, user in enumerate(users):
                    records.append(
                        prediction(model, at, x[j], float(scores[j]), user, request, role)
                    )
                    rows.setdefault(request, []).append(
                        Row(model.version, role, at, float(scores[j]), user)
                    )
            # The label of the first user: mostly by request, sometimes by user alone.
            label = float(1 - truth[0] if window == FLIPPED else truth[0])
            kind = rng.random()
            delay = int(rng.uniform(1, 19) * US)
            body: dict[str, Any] = {"label": label}
            if kind < 0.05:
                delay = 25 * US  # after the horizon: joins nothing
            if batch:
                body.update(request_id=request, entities={"user_id": users[0]})
            elif kind > 0.8:
                body["entities"] = {"user_id": users[0]}
            else:
                body["request_id"] = request
            body["at"] = from_us(at + delay).isoformat()
            labels.append(body)
            if delay > HORIZON_US:
                unjoinable += 1
                continue
            for row in rows[request]:
                if row.user == users[0]:
                    key = (row.version, row.role, window)
                    expected.setdefault(key, []).append((row.score, label))
    for i in range(20):  # labels of requests that never were
        labels.append({"request_id": f"nobody-{i}", "label": 1, "at": from_us(T0).isoformat()})
        unjoinable += 1

    monitor = run_monitor(
        Monitor(config, group=topic_name("monitor")), T0 + (WINDOWS + 2) * WINDOW_US
    )
    # Labels first: they wait for the predictions' watermark, whatever order Kafka gives.
    producer = Producer(config.kafka.client_config(**{"enable.idempotence": True}))
    for i, body in enumerate(labels):
        producer.produce(config.monitor.labels_topic, orjson.dumps(body), partition=i % PARTITIONS)
    assert producer.flush(60) == 0
    wait_until(lambda: monitor.counters.labels == len(labels), 60, "the labels to be parked")
    topic = config.serving.prediction_log_topic
    publish(config.kafka, topic, records)
    # Performance of the last window is reported once the horizon has passed after it.
    publish(config.kafka, topic, flush_window(served, T0 + (WINDOWS + 2) * WINDOW_US + 2 * US))
    run_monitor.wait()

    performance = [
        r
        for r in read_topic(config.kafka, config.monitor.drift_topic)
        if r["kind"] == "performance"
    ]
    got = {(r["version"], r["role"], window_index(r)): r for r in performance}
    assert set(got) == set(expected)
    for key, pairs in expected.items():
        record = got[key]
        assert record["labels"] == len(pairs), key
        truth = [y for _, y in pairs]
        scores = [s for s, _ in pairs]
        assert record["metrics"]["auc"] == pytest.approx(auc_by_definition(pairs), abs=1e-9)
        assert record["metrics"]["logloss"] == pytest.approx(log_loss(truth, scores), abs=1e-9)
        assert record["status"] == ("alert" if key[2] == FLIPPED else "ok"), record
    assert monitor.counters.labels_matched == len(labels) - unjoinable
    # Labels after the closed windows still wait (these are all after the horizon).
    closed = T0 + (WINDOWS + 2) * WINDOW_US
    waiting = sum(parse_timestamp(body["at"]) >= closed for body in labels)
    assert waiting > 0 and monitor.counters.labels_unmatched == unjoinable - waiting
    assert monitor.counters.labels_late == 0

    # One performance episode per version and role: opened by the flipped window, then resolved.
    events = [
        (e["event"], e["version"], e["role"], window_index(e["window"]))
        for e in read_topic(config.kafka, config.monitor.alerts_topic)
        if e["kind"] == "performance"
    ]
    assert sorted(events) == [
        ("alert", 1, "served", FLIPPED),
        ("alert", 2, "shadow", FLIPPED),
        ("resolved", 1, "served", FLIPPED + 1),
        ("resolved", 2, "shadow", FLIPPED + 1),
    ]
    assert len(FEATURES) == 4

    # Expiry: the index buckets left (the flush record's) expire; parked labels and the
    # positions never do.
    client = client_of(config.redis.url)
    buckets = list(client.scan_iter(match=f"{monitor.state.prefix}:idx:*"))
    assert buckets
    for key in buckets:
        assert 0 < client.pttl(key) <= finished_ttl_ms(config.monitor), key
    assert client.pttl(monitor.state.labels_key) == -1
    assert client.pttl(monitor.state.state_key) == -1
