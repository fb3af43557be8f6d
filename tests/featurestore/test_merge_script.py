"""The merge rules as Redis runs them: batches through the writer (`ViewWriter`) into the real
merge script, read back through the fold script, against the brute-force reference.

Two rules only the Lua `combine` decides, which tests/featurestore/test_tiles.py (numpy copy of
the merge) cannot hold Redis to:
- `last` across partitions: when events of several partitions share a timestamp, the greater
  (time, partition, offset) wins, whichever batch arrived first. Within one batch `reduce` breaks
  the tie; across batches the script does, so the streams here cut batches often and draw their
  times from a pool of a few instants spread over many partitions.
- variance: each batch's tile states are (n, mean, M2), merged with Chan et al.'s formula; values
  with a large mean and a tiny spread (10000.1, 10000.2, 10000.3) are the case that formula exists
  for (a sum of squares would cancel), held to a tolerance relative to the variance itself.
"""

from __future__ import annotations

import math
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from featurestore.config import OfflineSettings, RedisSettings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.events import EventBatch
from featurestore.keys import entity_key
from featurestore.offline.log import OfflineStore
from featurestore.online import FeatureValue, OnlineStore, read_features
from featurestore.tiles import TileLayout
from featurestore.writer import ViewWriter
from tests import reference
from tests.reference import Event

pytestmark = pytest.mark.integration

SECOND = 1_000_000
MINUTE = 60 * SECOND
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00Z
USERS = ("ann", "bob")
PARTITIONS = 4
VIEW = FeatureView(
    name="merge",
    entities=[Entity(name="user", join_keys=["user_id"])],
    source=KafkaSource(
        name="s",
        topic="unused",
        timestamp_field="ts",
        schema={"user_id": "string", "amount": "float64"},
    ),
    tile="1m",
    allowed_lateness="1d",  # nothing here is late: every event reaches the merge
    aggregations=[
        Aggregation(function="count", windows=["2m", "10m"]),
        Aggregation(column="amount", function="last", windows=["2m", "10m"]),
        Aggregation(column="amount", function="variance", windows=["2m", "10m"]),
        Aggregation(column="amount", function="stddev", windows=["10m"]),
        Aggregation(column="amount", function="mean", windows=["10m"]),
    ],
)
LAYOUT = TileLayout(VIEW)


@contextmanager
def writer(redis: str) -> Iterator[tuple[ViewWriter, OnlineStore]]:
    """A writer into a fresh namespace and offline root (hypothesis reruns the test body)."""
    namespace = f"test:{uuid.uuid4().hex[:12]}"
    client = redis_lib.Redis.from_url(redis)
    with tempfile.TemporaryDirectory() as root:
        online = OnlineStore(RedisSettings(url=redis, namespace=namespace))
        try:
            view_writer = ViewWriter(
                online, OfflineStore(OfflineSettings(root=Path(root))), VIEW, 1
            )
            view_writer.load_positions()
            yield view_writer, online
        finally:
            online.close()
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def apply_in_batches(view_writer: ViewWriter, events: Sequence[Event], cuts: Sequence[bool]) -> int:
    """Apply `events` in arrival order, a new batch after each event whose cut is true; each
    batch is one call of the merge script. Returns how many batches."""
    batches: list[list[Event]] = [[]]
    for event, cut in zip(events, cuts, strict=False):  # no cut past the end: one last batch
        batches[-1].append(event)
        if cut:
            batches.append([])
    applied = 0
    for batch in [b for b in batches if b]:
        columns = {
            "user_id": [e.values["user_id"] for e in batch],
            "amount": [e.values["amount"] for e in batch],
        }
        events_batch = EventBatch(
            columns,
            np.array([e.ts for e in batch], dtype=np.int64),
            np.array([e.partition for e in batch], dtype=np.int64),
            np.array([e.offset for e in batch], dtype=np.int64),
        )
        done = view_writer.apply(events_batch, events_batch.last_offsets())
        assert (done.applied, len(done.late), done.conflicts) == (len(batch), 0, 0)
        applied += 1
    return applied


def read(online: OnlineStore, t: int) -> dict[str, dict[str, FeatureValue]]:
    keys = [entity_key([user]) for user in USERS]
    [values] = read_features(online, [(VIEW.name, 1, LAYOUT, keys)], t)
    return dict(zip(USERS, values, strict=True))


def assert_matches_reference(online: OnlineStore, events: Sequence[Event], t: int) -> None:
    """Every feature of every user at `t` equals the reference: `last` and `count` exactly,
    variance and stddev within `reference.variance_tolerance`, the mean within 1e-9."""
    got = read(online, t)
    for user in USERS:
        mine = [e for e in events if e.values["user_id"] == user]
        want = reference.view_features(mine, VIEW, t)
        for feature in LAYOUT.features:
            value, expected = got[user][feature.name].value, want[feature.name]
            where = f"{user} {feature.name} at {t}: got {value!r}, reference {expected!r}"
            if expected is None:
                assert value is None, where
                continue
            assert value is not None, where
            function = feature.function.value
            if function in ("count", "last"):
                assert value == expected, where
                continue
            window = reference.window_events(
                mine, feature.window_tiles * LAYOUT.tile_us, LAYOUT.tile_us, t
            )
            xs = [float(e.values["amount"]) for e in window]
            if function == "mean":
                scale = math.fsum(abs(x) for x in xs) / len(xs)
                assert math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-9 * scale), where
                continue
            if function == "stddev":
                value, expected = value * value, expected * expected
            tolerance = reference.variance_tolerance(xs)
            assert abs(value - expected) <= tolerance, f"{where}; tolerance {tolerance!r}"


# -- last: ties across partitions, decided by the merge script --------------------------------

# A stream: (instant from the pool, partition, user) per event, and whether a batch ends after it.
# Values are distinct (the event's index), so a wrong winner always shows.
STREAM = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, PARTITIONS - 1), st.sampled_from(USERS)),
    min_size=1,
    max_size=40,
)


def make_events(pool: Sequence[int], stream: Sequence[tuple[int, int, str]]) -> list[Event]:
    offsets = [0] * PARTITIONS
    events = []
    for index, (instant, partition, user) in enumerate(stream):
        offsets[partition] += 1 + index % 2  # offsets need not be consecutive
        values = {"user_id": user, "amount": float(index)}
        events.append(Event(pool[instant % len(pool)], partition, offsets[partition], values))
    return events


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pool=st.lists(
        st.sampled_from([0, 1, 59 * SECOND, MINUTE - 1, MINUTE, 3 * MINUTE + 7]).map(
            lambda d: T0 + d
        ),
        min_size=1,
        max_size=3,
    ),
    stream=STREAM,
    # Mostly one event per batch: then every tie between two events is the script's to break.
    cuts=st.lists(st.booleans() | st.just(True), min_size=40, max_size=40),
)
def test_last_across_partitions_with_shared_timestamps_equals_the_reference(
    redis: str, pool: list[int], stream: list[tuple[int, int, str]], cuts: list[bool]
) -> None:
    events = make_events(pool, stream)
    with writer(redis) as (view_writer, online):
        apply_in_batches(view_writer, events, cuts)
        newest = max(e.ts for e in events)
        for t in (newest, newest + MINUTE, (newest // MINUTE + 1) * MINUTE - 1):
            assert_matches_reference(online, events, t)


def test_the_greater_partition_wins_a_tie_whichever_batch_comes_first(redis: str) -> None:
    """Hand-picked: one timestamp, four partitions, one event per batch (every tie is the merge
    script's). The greater (partition, offset) wins: arriving first or last does not matter."""
    ts = T0 + 30 * SECOND
    arrivals = [
        # (partition, offset, value): partition 3 holds the greatest key, arriving first.
        [(3, 5, 1.0), (0, 90, 2.0), (2, 7, 3.0), (1, 80, 4.0)],
        # ... or last; and a later offset of the same partition beats an earlier one.
        [(1, 80, 4.0), (2, 7, 3.0), (0, 90, 2.0), (3, 5, 5.0), (3, 6, 1.0)],
    ]
    for events_spec in arrivals:
        events = [Event(ts, p, o, {"user_id": "ann", "amount": v}) for p, o, v in events_spec]
        events.append(Event(ts - SECOND, 2, 99, {"user_id": "ann", "amount": 9.0}))  # older
        with writer(redis) as (view_writer, online):
            assert apply_in_batches(view_writer, events, [True] * len(events)) == len(events)
            got = read(online, ts)["ann"]
            assert got["amount_last_2m"].value == 1.0
            assert got["amount_last_2m"].event_time_us == ts
            assert_matches_reference(online, events, ts)


# -- variance: Chan's merge of (n, mean, M2) in the script ------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("spread_over_tiles", [False, True])
def test_variance_of_large_close_values_through_the_merge_script(
    redis: str, batch_size: int, spread_over_tiles: bool
) -> None:
    """10000.1, 10000.2, 10000.3: a variance of 0.01 under a sum of squares of 3e8. Merged by the
    script batch by batch (same tile) or folded at read time (a tile each)."""
    amounts = [10_000.1, 10_000.2, 10_000.3]
    events = [
        Event(T0 + (i * MINUTE if spread_over_tiles else i), 0, i, {"user_id": "ann", "amount": a})
        for i, a in enumerate(amounts)
    ]
    cuts = [(i + 1) % batch_size == 0 for i in range(len(events))]
    t = events[-1].ts
    with writer(redis) as (view_writer, online):
        apply_in_batches(view_writer, events, cuts)
        got = read(online, t)["ann"]["amount_variance_10m"].value
    want = reference.feature_value(events, "variance", "amount", 10 * MINUTE, MINUTE, t)
    assert want == pytest.approx(0.01, rel=1e-9)
    assert got is not None and math.isclose(got, want, rel_tol=1e-9), (got, want)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    base=st.sampled_from([0.0, 1e4, -3e6, 1e8]),
    steps=st.lists(st.integers(-20, 20), min_size=2, max_size=25),
    cuts=st.lists(st.booleans(), min_size=25, max_size=25),
)
@example(base=1e4, steps=[1, 2, 3], cuts=[True] * 25)
def test_variance_of_a_large_mean_and_small_spread_through_the_merge_script(
    redis: str, base: float, steps: list[int], cuts: list[bool]
) -> None:
    """Values `base + k/10` over a few tiles and partitions, cut into batches: the merged
    variance stays within `variance_tolerance` of the reference (relative to the variance)."""
    offsets = [0] * PARTITIONS
    events = []
    for i, step in enumerate(steps):
        partition = i % PARTITIONS
        offsets[partition] += 1
        ts = T0 + (i % 3) * MINUTE + i
        values = {"user_id": "bob", "amount": base + step / 10}
        events.append(Event(ts, partition, offsets[partition], values))
    with writer(redis) as (view_writer, online):
        apply_in_batches(view_writer, events, cuts)
        assert_matches_reference(online, events, max(e.ts for e in events))
