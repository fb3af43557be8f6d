"""Window kinds end to end on real Kafka and Redis: a random out-of-order stream with late events
goes through the ingest worker into features over offset, hopping, tumbling and lifetime
windows; online values, training-set values and `verify` all equal the brute-force reference."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from featurestore.config import Settings
from featurestore.definitions import Aggregation
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.registry import RegisteredView
from featurestore.verify import verify_view
from streaming.ingest.worker import Worker
from tests.reference import apply_lateness, view_features
from tests.streaming.conftest import (
    WorkerThreads,
    as_published,
    assert_matches_reference,
    event_payload,
    make_view,
    publish,
    random_events,
)

pytestmark = pytest.mark.integration

MINUTE = 60_000_000
KINDS = ["10m", "30m_offset_10m", "1h_every_10m", "1h_tumbling", "lifetime"]


def test_window_kinds_through_the_worker_equal_the_reference_online_offline_and_in_verify(
    settings: Settings, topic: str, run_worker: WorkerThreads
) -> None:
    base = make_view(topic)
    view = base.model_copy(
        update={
            "aggregations": [
                Aggregation(function="count", windows=KINDS),
                Aggregation(column="amount", function="sum", windows=KINDS),
                Aggregation(column="amount", function="mean", windows=KINDS),
                Aggregation(column="amount", function="stddev", windows=["1h_every_10m"]),
                Aggregation(column="amount", function="last", windows=KINDS),
                Aggregation(column="merchant", function="approx_count_distinct", windows=KINDS),
            ]
        }
    )
    view = type(view).model_validate(view.model_dump(by_alias=True))  # validated as applied
    events = random_events(random.Random(21), 3_000, users=25)
    where = publish(settings.kafka, topic, [event_payload(e) for e in events])
    published = as_published(events, where)
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g", batch_size=400)
    run_worker(worker, lambda w: w.counters.consumed >= len(events))
    run_worker.join(worker, 60)
    assert worker.counters.applied + worker.counters.late == len(events)
    assert worker.counters.late > 0

    applied, _late = apply_lateness(published, view.lateness_us)
    newest = max(e.ts for e in applied)
    # Online, at the newest event and later (every kind exact there).
    for later in (0, 7 * MINUTE, 65 * MINUTE):
        assert assert_matches_reference(settings, view, published, newest + later) > 0

    # Training rows at random times, before and between events: the offline formula is exact.
    rng = random.Random(5)
    oldest = min(e.ts for e in applied)
    rows = [
        (f"u{rng.randrange(25)}", rng.randint(oldest - 5 * MINUTE, newest + 90 * MINUTE))
        for _ in range(120)
    ]
    registered = RegisteredView(view, 1, view.fingerprint(), datetime.now(UTC))
    table = pa.table(
        {
            "user_id": [u for u, _ in rows],
            "event_timestamp": pa.array([t for _, t in rows], pa.timestamp("us", tz="UTC")),
        }
    )
    names = view.feature_names()
    got = (
        HistoricalQuery(OfflineStore(settings.offline), table, [(registered, f) for f in names])
        .to_arrow()
        .to_pylist()
    )
    for (user, t), row in zip(rows, got, strict=True):
        mine = [e for e in applied if e.values["user_id"] == user]
        for name, want in view_features(mine, view, t).items():
            if want is None or row[name] is None:
                assert row[name] is None and want is None, (user, t, name, row[name], want)
            elif "approx_count_distinct" in name:
                assert abs(row[name] - want) <= max(1, 0.02 * want), (user, t, name)
            else:
                assert math.isclose(row[name], want, rel_tol=1e-9, abs_tol=1e-9), (user, name)

    report = verify_view(settings, registered, sample=25)
    assert report.points == 50
    assert [c.feature for c in report.checks if c.mismatched] == []
