"""A new view version built from history equals the brute force, from the topic or the log."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from featurestore.config import Settings
from featurestore.definitions import Aggregation
from featurestore.registry import RegisteredView
from streaming.ingest.backfill import backfill_from_log, backfill_from_topic
from streaming.ingest.worker import Worker
from tests.streaming.conftest import (
    US,
    Published,
    assert_matches_reference,
    event_payload,
    make_view,
    publish,
    random_events,
)

pytestmark = pytest.mark.integration


def registered(view: object, version: int) -> RegisteredView:
    return RegisteredView(view, version, "test", datetime.now(UTC))  # type: ignore[arg-type]


def test_new_version_from_topic_and_from_log(
    log_settings: Settings, topic: str, run_worker: Callable[..., Worker]
) -> None:
    settings = log_settings  # the log that the backfill reads: a local folder or S3
    events = random_events(random.Random(11), 3_000, users=15)
    where = publish(settings.kafka, topic, [event_payload(e) for e in events])
    published = [
        Published(int(datetime.fromisoformat(str(e["ts"])).timestamp() * US), p, o, e)
        for e, (p, o) in zip(events, where, strict=True)
    ]
    v1 = make_view(topic)
    worker = Worker(settings, [(v1, 1)], group=f"{topic}.live")
    run_worker(worker, lambda w: w.counters.consumed >= len(events))
    deadline = time.monotonic() + 60
    while worker.counters.consumed < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)

    # v2 computes something new: it must see the whole history, not just new events.
    v2 = v1.model_copy(
        update={
            "aggregations": [
                *v1.aggregations,
                Aggregation(column="amount", function="max", windows=["30m"], name="peak"),
            ]
        }
    )
    counters = backfill_from_topic(settings, registered(v2, 2))
    assert counters.applied + counters.late == len(events)
    # v3, rebuilt from v1's offline log (what v1 applied; the same lateness, so nothing lost).
    counters = backfill_from_log(settings, registered(v2, 3), source_version=1)
    assert counters.late == 0

    newest = max(e.ts for e in published)
    for version in (2, 3):
        for later in (0, 20 * 60, 100 * 60):
            assert_matches_reference(settings, v2, published, newest + later * US, version=version)
