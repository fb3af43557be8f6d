"""The prediction log never blocks a request: a full queue drops and counts. (The records'
format: tests/featurestore/test_prediction_records.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from prometheus_client import generate_latest

from featurestore.config import KafkaSettings
from featurestore.prediction_records import SERVED_ROLE, LogBatch, LogGroup
from featurestore.services import free_port
from serving.metrics import ServingMetrics
from serving.prediction_log import PredictionLog


def _batch(rows: int) -> LogBatch:
    return LogBatch(
        request_id="r1",
        at=datetime(2026, 5, 1, tzinfo=UTC),
        model="fraud",
        role=SERVED_ROLE,
        entities={"user_id": [f"u{i}" for i in range(rows)], "card": list(range(rows))},
        key_columns=("user_id", "card"),
        groups=(
            LogGroup(
                version=2,
                alias="canary",
                names=("a", "b"),
                rows=np.arange(rows, dtype=np.intp),
                matrix=np.array([[1.0, np.nan]] * rows),
                scores=np.full(rows, 0.25),
            ),
        ),
    )


def test_a_full_queue_drops_and_counts_and_shutdown_counts_what_kafka_never_took() -> None:
    metrics = ServingMetrics()
    # No broker at this address: every record stays in the producer's queue of 5.
    nowhere = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")
    log = PredictionLog(nowhere, "predictions", capacity=5, metrics=metrics, flush_s=0.2)
    log.submit(_batch(2))  # before start: nowhere to go
    log.start()
    log.submit(_batch(3))
    log.submit(_batch(3))  # 2 fit, 1 does not
    log.submit(_batch(2))  # neither fits
    log.stop()
    log.submit(_batch(1))  # after stop
    text = generate_latest(metrics.registry).decode()
    assert 'fstore_prediction_log_dropped_total{reason="not_running"} 3.0' in text
    assert 'fstore_prediction_log_dropped_total{reason="queue_full"} 3.0' in text
    assert 'fstore_prediction_log_dropped_total{reason="shutdown"} 5.0' in text
    assert "fstore_prediction_log_records_total 5.0" in text


def test_an_empty_topic_turns_the_log_off() -> None:
    metrics = ServingMetrics()
    log = PredictionLog(KafkaSettings(), "", capacity=5, metrics=metrics)
    log.start()
    log.submit(_batch(10))
    log.stop()
    assert not log.enabled
    assert "queue_full" not in generate_latest(metrics.registry).decode()
