"""`fstore verify`: online values equal the offline computation after a messy stream."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from featurestore.config import Settings
from featurestore.definitions import Aggregation
from featurestore.online import OnlineStore
from featurestore.registry import RegisteredView
from featurestore.verify import verify_view
from streaming.ingest.worker import Worker
from tests.redis_target import client_of, delete_matching
from tests.streaming.conftest import (
    WorkerThreads,
    event_payload,
    make_view,
    publish,
    random_events,
)

pytestmark = pytest.mark.integration


def test_random_late_out_of_order_stream_verifies_with_zero_mismatches(
    log_settings: Settings, topic: str, run_worker: WorkerThreads, key_prefix: str
) -> None:
    settings = log_settings  # the worker appends to, and verify reads, a local or an S3 log
    base = make_view(topic)
    view = base.model_copy(
        update={
            "aggregations": [
                *base.aggregations,
                Aggregation(column="merchant", function="approx_count_distinct", windows=["2h"]),
            ]
        }
    )
    events = random_events(random.Random(99), 5_000, users=40)
    publish(settings.kafka, topic, [event_payload(e) for e in events])
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g", batch_size=500)
    run_worker(worker, lambda w: w.counters.consumed >= len(events))
    # Verify compares what the worker applied: it must have applied the whole stream first.
    run_worker.join(worker, 60)
    assert worker.counters.consumed == len(events)
    assert worker.counters.applied + worker.counters.late == len(events)
    assert worker.counters.late > 0
    registered = RegisteredView(view, 1, view.fingerprint(), datetime.now(UTC))

    report = verify_view(settings, registered, sample=40)

    assert report.points == 80
    assert all(c.compared == 80 for c in report.checks)
    # Every function, the HyperLogLog distinct count included, equals its offline computation.
    assert [c.feature for c in report.checks if c.mismatched] == []
    assert max(c.max_rel_diff for c in report.checks) <= 1e-9
    assert report.mismatch_rate == 0.0

    # A damaged online state is caught: drop one user's tiles.
    client = client_of(settings.redis.url)
    u7 = OnlineStore(settings.redis).entity_prefix("user_txn", 1, "u7")
    assert delete_matching(client, f"{u7}:*")
    damaged = verify_view(settings, registered, sample=40)
    assert damaged.mismatch_rate > 0
    assert any("('u7',)" in e for c in damaged.checks for e in c.examples)
