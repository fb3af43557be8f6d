"""The ingest worker on real Kafka and Redis, held against the brute-force reference model."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer

from featurestore.config import Settings
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.tiles import TileLayout
from streaming.ingest.worker import Worker
from tests.reference import apply_lateness, view_features
from tests.streaming.conftest import (
    BASE,
    US,
    Published,
    assert_matches_reference,
    event_payload,
    make_view,
    publish,
    random_events,
)

pytestmark = pytest.mark.integration


def wait_for(worker: Worker, consumed: int) -> Callable[[Worker], bool]:
    return lambda w: w.counters.consumed >= consumed


def test_random_out_of_order_and_late_stream_matches_brute_force(
    settings: Settings, topic: str, run_worker: Callable[..., Worker]
) -> None:
    rng = random.Random(20261123)
    events = random_events(rng, 4_000, users=25)
    where = publish(settings.kafka, topic, [event_payload(e) for e in events])
    published = [
        Published(int(datetime.fromisoformat(str(e["ts"])).timestamp() * US), p, o, e)
        for e, (p, o) in zip(events, where, strict=True)
    ]
    view = make_view(topic)
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g", batch_size=700)
    run_worker(worker, wait_for(worker, len(events)))
    deadline = time.monotonic() + 60
    while worker.counters.consumed < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)

    applied, late = apply_lateness(published, view.lateness_us)
    assert worker.counters.consumed == len(events)
    assert worker.counters.late == len(late) > 0
    assert worker.counters.applied == len(applied)

    newest = max(e.ts for e in published)
    compared = 0
    # At the newest event, then as windows slide past and expire (10m, 1h, 2h, and beyond).
    for later in (0, 30, 5 * 60, 45 * 60, 90 * 60, 3 * 3600):
        compared += assert_matches_reference(settings, view, published, newest + later * US)
    assert compared > 1000

    # The offline log holds exactly the applied events, each once.
    log = OfflineStore(settings.offline).read_events(view.name, 1)
    assert sorted(
        zip(log["_partition"].to_pylist(), log["_offset"].to_pylist(), strict=True)
    ) == sorted((e.partition, e.offset) for e in applied)


def test_bad_events_go_to_the_dead_letter_topic_and_good_ones_are_applied(
    settings: Settings, topic: str, run_worker: Callable[..., Worker]
) -> None:
    good = {"user_id": "u1", "amount": 10.0, "merchant": "m", "ts": "2026-03-01T12:00:00Z"}
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "malformed_json"),
        (b'{"amount": 1.0, "merchant": "m", "ts": "2026-03-01T12:00:00Z"}', "missing_field"),
        (
            b'{"user_id": "u1", "amount": "ten", "merchant": "m", "ts": "2026-03-01T12:00:00Z"}',
            "wrong_type",
        ),
        (
            b'{"user_id": "u1", "amount": 1.0, "merchant": "m", "ts": "2026-03-01T12:00:00"}',
            "bad_timestamp",
        ),
        (b'{"user_id": "u1", "amount": 1.0, "merchant": "m", "ts": "later"}', "bad_timestamp"),
        (
            b'{"user_id": "u1", "amount": 1.0, "merchant": "m", '
            b'"ts": "2026-03-01T12:00:00Z", "pad": "' + b"x" * 20_000 + b'"}',
            "oversized",
        ),
    ]
    import orjson

    payloads: list[tuple[bytes, bytes | None]] = []
    for i in range(10):
        payloads.append((orjson.dumps({**good, "amount": float(i)}), b"u1"))
        if i < len(bad):
            payloads.append((bad[i][0], b"u1"))
    publish(settings.kafka, topic, payloads)

    view = make_view(topic)
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g", max_message_bytes=10_000)
    run_worker(worker, wait_for(worker, len(payloads)))
    deadline = time.monotonic() + 60
    while worker.counters.consumed < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.1)

    assert worker.counters.applied == 10
    assert worker.counters.dead_lettered == len(bad)
    as_of = int(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC).timestamp() * US)
    [[features]] = read_features(
        OnlineStore(settings.redis), [(view.name, 1, TileLayout(view), ["u1"])], as_of
    )
    assert features["count_10m"].value == 10
    assert features["amount_sum_10m"].value == sum(range(10))

    consumer = Consumer(
        settings.kafka.client_config(
            **{"group.id": f"{topic}.dlq-reader", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([f"{topic}.dlq"])
    received = []
    deadline = time.monotonic() + 30
    while len(received) < len(bad) and time.monotonic() < deadline:
        received.extend(m for m in consumer.consume(10, timeout=0.5) if m.error() is None)
    consumer.close()
    dead = {m.value(): dict(m.headers() or []) for m in received}
    assert len(dead) == len(bad)
    for value, reason in bad:
        assert dead[value]["reason"] == reason.encode()
        assert dead[value]["source.topic"] == topic.encode()


def test_approximate_distinct_counts_stay_within_the_hyperloglog_error(
    settings: Settings, topic: str, run_worker: Callable[..., Worker]
) -> None:
    from featurestore.definitions import Aggregation, Entity, FeatureView

    base = make_view(topic)
    view = FeatureView(
        name="user_merchants",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=base.source,
        tile="1m",
        allowed_lateness="2h",
        aggregations=[
            Aggregation(column="merchant", function="approx_count_distinct", windows=["10m", "2h"]),
            Aggregation(function="count", windows=["10m", "2h"]),
        ],
    )
    rng = random.Random(5)
    events = [
        {
            "user_id": f"u{rng.randrange(3)}",
            "amount": 1.0,
            "merchant": f"m{rng.randrange(3000)}",
            "ts": (BASE + timedelta(seconds=rng.uniform(0, 5400))).isoformat(),
        }
        for _ in range(6000)
    ]
    publish(settings.kafka, topic, [event_payload(e) for e in events])
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g")
    run_worker(worker, wait_for(worker, len(events)))
    deadline = time.monotonic() + 60
    while worker.counters.consumed < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker.counters.applied == len(events)  # lateness of 2h: nothing is late here

    as_of = BASE + timedelta(seconds=5400)
    as_of_us = int(as_of.timestamp() * US)
    users = ["u0", "u1", "u2"]
    [online] = read_features(
        OnlineStore(settings.redis), [(view.name, 1, TileLayout(view), users)], as_of_us
    )
    published = [
        Published(int(datetime.fromisoformat(str(e["ts"])).timestamp() * US), 0, i, e)
        for i, e in enumerate(events)
    ]
    for user, got in zip(users, online, strict=True):
        mine = [e for e in published if e.values["user_id"] == user]
        want = view_features(mine, view, as_of_us)
        for window in ("10m", "2h"):
            exact = want[f"merchant_approx_count_distinct_{window}"]
            estimate = got[f"merchant_approx_count_distinct_{window}"].value
            assert exact > 10
            # Redis HLLs: 0.81% standard error; 4 sigma.
            assert estimate == pytest.approx(exact, rel=0.0325), (user, window)
            assert got[f"count_{window}"].value == want[f"count_{window}"]
