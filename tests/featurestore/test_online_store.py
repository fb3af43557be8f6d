"""The online store on a real Redis: writes through the merge script, reads through the fold
script and its per-entity cache, against the brute-force model in tests/reference.py.

A read keeps each entity's folded windows for the rest of its tile; every write of the entity
must drop them. These tests interleave writes (into the read's own tile, older tiles and other
entities) with repeated reads in a few tiles, so a read served from a cache that should have
been dropped, or kept across tiles, gives a value the reference does not.
"""

from __future__ import annotations

import asyncio
import math
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.config import RedisSettings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.online import (
    BUCKET_TILES,
    FeatureValue,
    Merged,
    OnlineStore,
    StateLost,
    ViewRead,
    ViewValues,
    read_features,
    read_views,
    read_views_async,
)
from featurestore.positions import NO_POSITION, Position, PositionConflict
from featurestore.tiles import TileLayout
from tests import reference
from tests.reference import Event

pytestmark = pytest.mark.integration

MINUTE = 60_000_000
T0 = 1_767_225_600_000_000 + 30 * MINUTE  # 2026-01-01T00:30Z: windows reach into the bucket before
VIEW = FeatureView(
    name="v",
    entities=[Entity(name="user", join_keys=["user_id"])],
    source=KafkaSource(
        name="s",
        topic="t",
        timestamp_field="ts",
        schema={"user_id": "string", "amount": "float64"},
    ),
    tile="1m",
    aggregations=[
        Aggregation(function="count", windows=["2m", "10m"]),
        Aggregation(column="amount", function="sum", windows=["2m", "1h"]),
        Aggregation(column="amount", function="mean", windows=["10m"]),
        Aggregation(column="amount", function="max", windows=["1h"]),
        Aggregation(column="amount", function="stddev", windows=["10m"]),
        Aggregation(column="amount", function="last", windows=["2m"]),
    ],
)
USERS = ("ann", "bob")

# A step: write a batch of (user, minutes after T0, amount) events, or read at the last
# microsecond of a minute (reads at the end of their tile are exact: no event can follow them in
# that tile).
writes = st.lists(
    st.tuples(st.sampled_from(USERS), st.integers(-40, 4), st.integers(-5, 5)),
    min_size=1,
    max_size=6,
).map(lambda batch: ("write", batch))
reads = st.integers(0, 3).map(lambda minute: ("read", minute))


@pytest.fixture
def online(redis: str) -> OnlineStore:
    return OnlineStore(RedisSettings(url=redis, namespace=f"test-online-{uuid.uuid4().hex[:8]}"))


def write(store: OnlineStore, layout: TileLayout, batch: list[Event], at: Position) -> Position:
    """What the worker sends for one batch: a state per (user, tile) and per (user, bucket)."""
    users = [str(e.values["user_id"]) for e in batch]
    ts = np.array([e.ts for e in batch], dtype=np.int64)
    tile = ts // layout.tile_us
    columns = {"amount": np.array([float(e.values["amount"]) for e in batch])}
    partition = np.zeros(len(batch), dtype=np.int64)
    offset = np.array([e.offset for e in batch], dtype=np.int64)
    buckets = (tile // BUCKET_TILES).tolist()
    keys = sorted({f"{u}:{b}" for u, b in zip(users, buckets, strict=True)})
    key_of = [keys.index(f"{u}:{b}") for u, b in zip(users, buckets, strict=True)]
    rows = []
    # Tile fields are the tile's place in its bucket; -1 is the bucket's total.
    for fields in ((tile % BUCKET_TILES).tolist(), [-1] * len(batch)):
        labels = list(zip(key_of, fields, strict=True))
        groups = sorted(set(labels))
        group = np.array([groups.index(label) for label in labels], dtype=np.int64)
        states = layout.reduce(group, len(groups), ts, partition, offset, columns)
        rows += [[key, field, *state] for (key, field), state in zip(groups, states, strict=True)]
    moved = Position(at.offset + len(batch), max(at.watermark, int(ts.max())))
    merged = store.merge_batch(
        VIEW.name,
        1,
        layout,
        keys,
        [3_600_000 * 4] * len(keys),
        np.array(rows, dtype=np.float64),
        {0: (at, moved)},
    )
    assert isinstance(merged, Merged)
    return moved


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.one_of(writes, reads), min_size=2, max_size=14))
def test_reads_equal_the_reference_whatever_writes_come_between(
    online: OnlineStore, steps: list[tuple[str, object]]
) -> None:
    layout = TileLayout(VIEW)
    prefix = online.shard_prefix(VIEW.name, 1, 0)
    online.client.delete(*[f"{prefix}:{u}:c" for u in USERS], f"{prefix}:_pos")
    for key in online.client.scan_iter(match=f"{prefix}:*"):
        online.client.delete(key)
    applied: list[Event] = []
    at = NO_POSITION
    for kind, arg in steps:
        if kind == "write":
            batch = [
                Event(
                    ts=T0 + minute * MINUTE + 7_000_000 * (i + 1),
                    partition=0,
                    offset=at.offset + 1 + i,
                    values={"user_id": user, "amount": float(amount)},
                )
                for i, (user, minute, amount) in enumerate(arg)  # type: ignore[arg-type]
            ]
            at = write(online, layout, batch, at)
            applied += batch
            continue
        t = T0 + (int(arg) + 1) * MINUTE - 1  # type: ignore[call-overload]
        # The first read in the tile folds (through the asyncio connection, as serving reads),
        # the ones after it are the cache's (through both ways of sending).
        for attempt, read in (
            ("folded", read_async),
            ("cached", read_views),
            ("cached", read_async),
        ):
            got = as_features(read(online, [(VIEW.name, 1, layout, list(USERS))], t)[0])
            for user, values in zip(USERS, got, strict=True):
                mine = [e for e in applied if e.values["user_id"] == user]
                want = reference.view_features(mine, VIEW, t)
                for name, value in values.items():
                    expected = want[name]
                    where = (
                        f"{user} {name} at minute {arg} ({attempt}): {value.value} vs {expected}"
                    )
                    if expected is None:
                        assert value.value is None, where
                    else:
                        assert value.value is not None, where
                        assert math.isclose(value.value, expected, rel_tol=1e-9, abs_tol=1e-9), (
                            where
                        )


def read_async(store: OnlineStore, reads: list[ViewRead], as_of_us: int) -> list[ViewValues]:
    """`read_views_async` on a loop of its own, which closes its connection when done."""

    async def read() -> list[ViewValues]:
        try:
            return await read_views_async(store, reads, as_of_us)
        finally:
            store.close()

    return asyncio.run(read())


def as_features(view_values: ViewValues) -> list[dict[str, FeatureValue]]:
    """Per entity, name -> the value (None when missing), as `read_features` gives them."""
    return [
        {
            name: FeatureValue(None if math.isnan(v) else v, "", None)
            for name, v in zip(view_values.features, row, strict=True)
        }
        for row in view_values.values.tolist()
    ]


def test_a_write_drops_only_the_written_entitys_cache(online: OnlineStore) -> None:
    layout = TileLayout(VIEW)
    prefix = online.shard_prefix(VIEW.name, 1, 0)
    event = Event(T0, 0, 0, {"user_id": "ann", "amount": 2.0})
    at = write(online, layout, [event], NO_POSITION)
    t = T0 + MINUTE - 1
    read_features(online, [(VIEW.name, 1, layout, ["ann", "bob"])], t)
    assert online.client.get(f"{prefix}:ann:c") is not None
    assert online.client.get(f"{prefix}:bob:c") is not None
    # Tagged with the tile, and kept no longer than one tile.
    assert online.client.get(f"{prefix}:ann:c").startswith(f"{t // MINUTE};".encode())
    assert 0 < online.client.pttl(f"{prefix}:ann:c") <= MINUTE // 1000

    write(online, layout, [Event(T0 + 1, 0, 1, {"user_id": "bob", "amount": 3.0})], at)
    assert online.client.get(f"{prefix}:ann:c") is not None
    assert online.client.get(f"{prefix}:bob:c") is None
    [[ann, bob]] = read_features(online, [(VIEW.name, 1, layout, ["ann", "bob"])], t)
    assert ann["amount_sum_2m"].value == 2.0
    assert bob["amount_sum_2m"].value == 3.0


def test_a_read_survives_a_flushed_script_cache_and_the_reads_after_it_get_their_answers(
    online: OnlineStore,
) -> None:
    """Two folds in one read both answer NOSCRIPT after SCRIPT FLUSH (a restarted server): the
    read loads the script and asks again, and the reads after it, on the pool the failed read
    left an answer unread in, get their own answers. Keys count in bytes, not characters."""
    layout = TileLayout(VIEW)
    at = write(online, layout, [Event(T0, 0, 0, {"user_id": "zoë", "amount": 2.5})], NO_POSITION)
    write(online, layout, [Event(T0 + 1, 0, 1, {"user_id": "ann", "amount": 4.0})], at)
    t = T0 + MINUTE - 1
    reads = [(VIEW.name, 1, layout, ["zoë"]), (VIEW.name, 1, layout, ["ann", "zoë", "nobody"])]
    online.client.script_flush()
    for _ in range(3):
        [[zoe], [ann, zoe_again, nobody]] = read_features(online, reads, t)
        assert zoe["amount_sum_2m"].value == zoe_again["amount_sum_2m"].value == 2.5
        assert ann["amount_sum_2m"].value == 4.0
        assert nobody["amount_mean_10m"].status == "missing"
        assert nobody["amount_sum_2m"].value == 0.0


def test_an_async_read_survives_a_flushed_script_cache(online: OnlineStore) -> None:
    """The same through the asyncio connection: both folds answer NOSCRIPT, the read loads the
    script and asks again, and a read on the same connection after it gets its own answers."""
    layout = TileLayout(VIEW)
    at = write(online, layout, [Event(T0, 0, 0, {"user_id": "zoë", "amount": 2.5})], NO_POSITION)
    write(online, layout, [Event(T0 + 1, 0, 1, {"user_id": "ann", "amount": 4.0})], at)
    t = T0 + MINUTE - 1
    reads: list[ViewRead] = [
        (VIEW.name, 1, layout, ["zoë"]),
        (VIEW.name, 1, layout, ["ann", "zoë", "nobody"]),
    ]

    async def twice() -> list[list[ViewValues]]:
        try:
            return [await read_views_async(online, reads, t) for _ in range(2)]
        finally:
            online.close()

    online.client.script_flush()
    for zoe, rest in asyncio.run(twice()):
        sums = [*zoe.values[:, 2], *rest.values[:, 2]]  # amount_sum_2m, the third feature
        assert zoe.features[2] == "amount_sum_2m"
        assert sums[:3] == [2.5, 4.0, 2.5]
        assert sums[3] == 0.0  # nobody: a sum over no event


def test_a_merge_survives_a_flushed_script_cache(online: OnlineStore) -> None:
    """A merge after SCRIPT FLUSH (a restarted server) answers NOSCRIPT: the writer loads the
    script and sends the call again, once, and the state holds both merges exactly once."""
    layout = TileLayout(VIEW)
    at = write(online, layout, [Event(T0, 0, 0, {"user_id": "ann", "amount": 2.5})], NO_POSITION)
    online.client.script_flush()
    at = write(online, layout, [Event(T0 + 1, 0, 1, {"user_id": "ann", "amount": 4.0})], at)
    assert online.positions(VIEW.name, 1) == {0: at}
    [[ann]] = read_features(online, [(VIEW.name, 1, layout, ["ann"])], T0 + MINUTE - 1)
    assert ann["amount_sum_2m"].value == 6.5
    assert ann["count_2m"].value == 2.0


def test_a_batch_from_a_stale_position_changes_nothing(online: OnlineStore) -> None:
    """A replayed batch (or a second worker on a revoked partition) starts from a position that
    is no longer stored: the merge refuses it whole and says what is stored."""
    layout = TileLayout(VIEW)
    at = write(online, layout, [Event(T0, 0, 0, {"user_id": "ann", "amount": 2.5})], NO_POSITION)
    prefix = online.shard_prefix(VIEW.name, 1, 0)
    before = online.client.hgetall(f"{prefix}:ann:{T0 // layout.tile_us // BUCKET_TILES}")
    replay = online.merge_batch(
        VIEW.name,
        1,
        layout,
        ["ann:0"],
        [60_000],
        np.zeros((1, layout.width + 2)),
        {0: (NO_POSITION, Position(NO_POSITION.offset + 1, T0))},
    )
    assert replay == PositionConflict(partition=0, stored_offset=at.offset)
    assert online.positions(VIEW.name, 1) == {0: at}
    assert online.client.hgetall(f"{prefix}:ann:{T0 // layout.tile_us // BUCKET_TILES}") == before
    assert not online.client.exists(f"{prefix}:ann:0")


def nothing(
    online: OnlineStore,
    layout: TileLayout,
    moves: dict[int, tuple[Position, Position]],
    epoch: str | None = None,
) -> Merged | PositionConflict | StateLost:
    """A merge of no tile rows that moves `moves`: the positions and epoch checks alone."""
    rows = np.zeros((0, layout.width + 2))
    return online.merge_batch(VIEW.name, 1, layout, [], [], rows, moves, (), epoch)


def test_the_first_merge_writes_an_epoch_marker_and_later_ones_keep_it(
    online: OnlineStore,
) -> None:
    layout = TileLayout(VIEW)
    assert online.state(VIEW.name, 1).epoch is None
    first = nothing(online, layout, {0: (NO_POSITION, Position(4, T0))})
    assert isinstance(first, Merged) and len(first.epoch) == 32
    # A writer that has seen none yet (it loaded before the first merge) learns it.
    second = nothing(online, layout, {1: (NO_POSITION, Position(0, T0))})
    assert second == first
    third = nothing(online, layout, {0: (Position(4, T0), Position(9, T0))}, first.epoch)
    assert third == first
    state = online.state(VIEW.name, 1)
    assert state.epoch == first.epoch
    assert state.positions == {0: Position(9, T0), 1: Position(0, T0)}
    assert online.positions(VIEW.name, 1) == state.positions  # the other fields left out
    assert state.rebuilding is None


def test_a_merge_into_a_lost_state_changes_nothing_and_sets_the_rebuild_marker(
    online: OnlineStore,
) -> None:
    """Redis flushed (the epoch gone), or a replica that lagged (a position behind the one the
    writer merged): the merge says so, distinct from a conflict, and reads say `rebuilding` at
    once. A conflict on one partition does not hide a position moved back on another."""
    layout = TileLayout(VIEW)
    prefix = online.shard_prefix(VIEW.name, 1, 0)
    at = write(online, layout, [Event(T0, 0, 0, {"user_id": "ann", "amount": 2.0})], NO_POSITION)
    epoch = online.state(VIEW.name, 1).epoch
    assert epoch is not None

    online.client.hdel(f"{prefix}:_pos", "epoch")
    lost = nothing(online, layout, {0: (at, Position(at.offset + 1, T0))}, epoch)
    assert isinstance(lost, StateLost) and "gone" in lost.reason
    assert online.state(VIEW.name, 1).rebuilding is not None
    assert online.state(VIEW.name, 1).positions == {0: at}  # unchanged
    [[ann]] = read_features(online, [(VIEW.name, 1, layout, ["ann"])], T0 + MINUTE - 1)
    assert {value.status for value in ann.values()} == {"rebuilding"}
    assert ann["amount_sum_2m"].value == 2.0  # what is there, said to be unsure

    online.set_rebuilding(VIEW.name, 1, None)
    online.client.hset(f"{prefix}:_pos", "epoch", epoch)
    [[ann]] = read_features(online, [(VIEW.name, 1, layout, ["ann"])], T0 + MINUTE - 1)
    assert ann["amount_sum_2m"].status == "ok"

    # Partition 1 is ahead of the writer (a conflict), partition 0 behind it (a loss).
    online.client.hset(f"{prefix}:_pos", "1", f"5:{T0}")
    behind = Position(at.offset + 3, T0)
    moves = {1: (NO_POSITION, Position(7, T0)), 0: (behind, Position(behind.offset + 1, T0))}
    lost = nothing(online, layout, moves, epoch)
    assert lost == StateLost(
        f"partition 0 stands at offset {at.offset}, behind the {behind.offset} this writer merged"
    )
    assert online.state(VIEW.name, 1).rebuilding == "position moved back"


def test_announced_offsets_only_grow(online: OnlineStore) -> None:
    online.announce(VIEW.name, 1, {0: 10, 2: 4})
    online.announce(VIEW.name, 1, {0: 7, 2: 5})  # an older batch replayed: 0 stays at 10
    state = online.state(VIEW.name, 1)
    assert state.appending == {0: 10, 2: 5}
    assert state.positions == {} and state.epoch is None
