"""The writer used directly, without Kafka: random event batches into a real Redis and a Parquet
log equal the brute-force reference, and a batch applied again changes nothing.

Entities have a composite key whose parts contain the separator (`("a|b", "c")` and
`("a", "b|c")` are two entities), events jump back past the allowed lateness, land exactly on
tile boundaries and come in any batch cuts over three partitions.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.config import OfflineSettings, RedisSettings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.events import EventBatch
from featurestore.keys import entity_key
from featurestore.offline.log import OFFSET, PARTITION, OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.tiles import TileLayout
from featurestore.writer import ViewWriter
from tests.redis_target import client_of, delete_matching
from tests.reference import Event, apply_lateness, newest_event, view_features

pytestmark = pytest.mark.integration

US = 1_000_000
T0 = 1_772_366_400 * US  # 2026-03-01T12:00Z
ENTITIES = [("a|b", "c"), ("a", "b|c"), ("u1", "7"), ("u\\2", "")]
VIEW = FeatureView(
    name="card_txn",
    entities=[Entity(name="card", join_keys=["user_id", "card"])],
    source=KafkaSource(
        name="txns",
        topic="unused",
        timestamp_field="ts",
        schema={"user_id": "string", "card": "string", "amount": "float64"},
    ),
    tile="1m",
    allowed_lateness="5m",
    aggregations=[
        Aggregation(function="count", windows=["10m", "1h"]),
        Aggregation(column="amount", function="sum", windows=["10m", "2h"]),
        Aggregation(column="amount", function="mean", windows=["1h"]),
        Aggregation(column="amount", function="min", windows=["2h"]),
        Aggregation(column="amount", function="max", windows=["10m"]),
        Aggregation(column="amount", function="stddev", windows=["1h"]),
        Aggregation(column="amount", function="last", windows=["2h"]),
        Aggregation(column="amount", function="first", windows=["10m", "2h"]),
    ],
)

# (seconds forward of the previous event, or back past the lateness; on a tile edge?;
#  partition; entity; amount)
EVENT = st.tuples(
    st.one_of(st.integers(-150, 150), st.integers(-2_400, -301)),
    st.booleans(),
    st.integers(0, 2),
    st.integers(0, len(ENTITIES) - 1),
    st.integers(-500, 500).map(lambda cents: cents / 4),
)


def make_events(spec: list[tuple[int, bool, int, int, float]]) -> list[Event]:
    events, offsets, clock = [], [0, 0, 0], T0
    for step, on_edge, partition, entity, amount in spec:
        clock += 20 * US
        ts = clock + step * US
        if on_edge:
            ts -= ts % (60 * US)
        user, card = ENTITIES[entity]
        values = {"user_id": user, "card": card, "amount": amount}
        events.append(Event(ts, partition, offsets[partition], values))
        offsets[partition] += 1
    return events


def as_batch(events: list[Event]) -> EventBatch:
    return EventBatch(
        {name: [e.values[name] for e in events] for name in ("user_id", "card", "amount")},
        np.array([e.ts for e in events], dtype=np.int64),
        np.array([e.partition for e in events], dtype=np.int64),
        np.array([e.offset for e in events], dtype=np.int64),
    )


@contextmanager
def stores(redis: str) -> Iterator[tuple[OnlineStore, OfflineStore, redis_lib.Redis]]:
    """A fresh namespace and offline root per example (hypothesis reruns the test body)."""
    namespace = f"test:{uuid.uuid4().hex[:12]}"
    client = client_of(redis)
    with tempfile.TemporaryDirectory() as root:
        online = OnlineStore(RedisSettings(url=redis, namespace=namespace))
        try:
            yield online, OfflineStore(OfflineSettings(root=Path(root))), client
        finally:
            online.close()
            delete_matching(client, f"{namespace}:*")
            client.close()


def snapshot(client: redis_lib.Redis, online: OnlineStore) -> dict[bytes, Any]:
    """Every key of the namespace with its serialized value and whether it expires; positions
    hashes as their fields, without the announced offsets ("a:<partition>"): a stale writer
    announces the offsets of the batch it is about to try, before its merge is refused, and
    an announcement only ever raises them (harmless; featurestore/writer.py)."""
    keys = sorted(client.scan_iter(match=f"{online.namespace}:*", count=1000))
    out: dict[bytes, Any] = {}
    for key in keys:
        if key.endswith(b":_pos"):
            fields = client.hgetall(key)
            out[key] = {k: v for k, v in fields.items() if not k.startswith(b"a:")}
        else:
            out[key] = (client.dump(key), client.pttl(key) > 0)
    return out


def log_files(offline: OfflineStore) -> int:
    return len(list(offline.view_dir(VIEW.name, 1).glob("*/*.parquet")))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spec=st.lists(EVENT, min_size=1, max_size=150),
    cuts=st.lists(st.integers(1, 149), max_size=4),
    replayed=st.integers(0, 4),
)
def test_batches_applied_directly_equal_the_reference_and_a_replay_changes_nothing(
    redis: str, spec: list[tuple[int, bool, int, int, float]], cuts: list[int], replayed: int
) -> None:
    events = make_events(spec)
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    batches = [as_batch(events[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    applied_ref, late_ref = apply_lateness(events, VIEW.lateness_us)

    with stores(redis) as (online, offline, client):
        writer = ViewWriter(online, offline, VIEW, 1)
        writer.load_positions()
        stale = ViewWriter(online, offline, VIEW, 1)  # positions read before anything was applied
        stale.load_positions()
        late: set[tuple[int, int]] = set()
        told: list[int] = []
        applied = 0
        for batch in batches:
            done = writer.apply(batch, batch.last_offsets(), on_late=lambda i: told.extend(i))
            assert done.conflicts == 0
            assert told == done.late.tolist()
            told.clear()
            applied += done.applied
            late |= {(int(batch.partition[i]), int(batch.offset[i])) for i in done.late}
        assert applied == len(applied_ref)
        assert late == {(e.partition, e.offset) for e in late_ref}

        # The log holds exactly the applied events.
        log = offline.read_events(VIEW.name, 1)
        pairs = zip(log[PARTITION].to_pylist(), log[OFFSET].to_pylist(), strict=True)
        assert sorted(pairs) == sorted((e.partition, e.offset) for e in applied_ref)

        # Every feature of every entity, at the newest event and as windows slide and empty.
        layout = TileLayout(VIEW)
        keys = [entity_key(e) for e in ENTITIES]
        newest = max(e.ts for e in events)
        for later in (0, 7 * 60, 20 * 60, 100 * 60):
            as_of = newest + later * US
            [got] = read_features(online, [(VIEW.name, 1, layout, keys)], as_of)
            for entity, features in zip(ENTITIES, got, strict=True):
                mine = [e for e in applied_ref if (e.values["user_id"], e.values["card"]) == entity]
                for name, want in view_features(mine, VIEW, as_of).items():
                    value = features[name].value
                    assert value == (None if want is None else pytest.approx(want, abs=1e-9))
                window = 2 * 3600 * US
                newest_ts = newest_event(mine, window, VIEW.tile_us, as_of)
                assert features["amount_last_2h"].event_time_us == newest_ts

        # Applied again — by the same writer, or by one whose positions are stale — nothing
        # changes online; the stale one conflicts once, re-reads the positions and stops.
        before, files = snapshot(client, online), log_files(offline)
        again = batches[replayed % len(batches)]
        done = writer.apply(again, again.last_offsets(), on_late=lambda _i: pytest.fail("late"))
        assert (done.applied, len(done.late), done.conflicts) == (0, 0, 0)
        assert log_files(offline) == files
        whole = as_batch(events)
        done = stale.apply(whole, whole.last_offsets())
        assert (done.applied, done.conflicts) == (0, 1)
        assert snapshot(client, online) == before
        assert stale.positions == writer.positions
