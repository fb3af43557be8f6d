"""TileLayout (reduce -> merge -> finish) against the brute-force model in tests/reference.py.

The online path never sees raw events at read time: the worker reduces each batch to one state
per tile, states of the same tile are merged, and a read folds the tiles of a window. These tests
drive that path with random streams and hold every feature to docs/semantics.md; the merge is
reference.merge, the numpy copy of the Lua one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.tiles import Feature, TileLayout
from tests import reference
from tests.reference import Event

SECOND = 1_000_000
MINUTE = 60 * SECOND
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, a whole number of minutes

SOURCE = KafkaSource(
    name="txns",
    topic="transactions",
    timestamp_field="ts",
    schema={"user_id": "string", "amount": "float64", "qty": "int64", "flag": "bool"},
)
USER = Entity(name="user", join_keys=["user_id"])
COLUMNS = ("amount", "qty", "flag")

# Every (function, column) a view can aggregate here; approx_count_distinct lives in Redis HLLs.
PAIRS = [("count", None), ("count", "amount")] + [
    (function, column)
    for function in ("sum", "mean", "min", "max", "variance", "stddev", "last", "first")
    for column in COLUMNS
]


def make_view(
    tile: str, aggregations: Sequence[tuple[str, str | None, Sequence[str]]]
) -> FeatureView:
    return FeatureView(
        name="user_txn",
        entities=[USER],
        source=SOURCE,
        tile=tile,
        aggregations=[
            Aggregation(function=function, column=column, windows=list(windows))
            for function, column, windows in aggregations
        ],
    )


# -- the online path: batches -> tile states -> merged tiles -> features ------------------------


def reduce_batch(layout: TileLayout, batch: Sequence[Event]) -> list[tuple[int, np.ndarray]]:
    """What the worker does with one batch of one entity: one state per tile it touches."""
    if not batch:
        return []
    ts = np.array([e.ts for e in batch], dtype=np.int64)
    tiles, group = np.unique(ts // layout.tile_us, return_inverse=True)
    states = layout.reduce(
        group.astype(np.int64),
        len(tiles),
        ts,
        np.array([e.partition for e in batch], dtype=np.int64),
        np.array([e.offset for e in batch], dtype=np.int64),
        {c: np.array([float(e.values[c]) for e in batch]) for c in layout.columns},
    )
    return [(int(tile), states[i]) for i, tile in enumerate(tiles)]


def store(
    layout: TileLayout, rows: Sequence[tuple[int, np.ndarray]], rng: random.Random
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the batch states of each tile in a random order and grouping, as repeated writes
    to the store would (any order must give the same tile: merge is associative/commutative)."""
    by_tile: dict[int, list[np.ndarray]] = {}
    for tile, state in rows:
        by_tile.setdefault(tile, []).append(state)
    tiles, states = [], []
    for tile, pending in sorted(by_tile.items()):
        while len(pending) > 1:
            i, j = sorted(rng.sample(range(len(pending)), 2))
            merged = reference.merge(layout, np.stack([pending[i], pending[j]]))
            pending = [s for k, s in enumerate(pending) if k not in (i, j)] + [merged]
        tiles.append(tile)
        states.append(pending[0])
    return as_arrays(layout, list(zip(tiles, states, strict=True)))


def as_arrays(
    layout: TileLayout, rows: Sequence[tuple[int, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    tiles = np.array([tile for tile, _ in rows], dtype=np.int64)
    states = np.array([state for _, state in rows], dtype=np.float64).reshape(-1, layout.width)
    return tiles, states


# -- comparing with the reference ------------------------------------------------------------


def assert_feature(
    feature: Feature, got: float | None, want: Any, in_window: Sequence[Event], where: str
) -> None:
    """Exact for count/min/max/last (no arithmetic); 1e-9 relative otherwise.

    sum and mean are float sums in another order than the reference's correctly rounded fsum,
    so their tolerance is relative to the sum of |x| (cancellation of large opposite values
    loses the same absolute amount in any order). variance and stddev come from (n, mean, M2)
    states merged with Chan's formula: relative to the variance itself, widened only by the
    data's conditioning (`reference.variance_tolerance`), so a sum-of-squares computation that
    cancels fails here.
    """
    message = f"{feature.name} {where}: got {got!r}, reference {want!r}"
    if want is None:
        assert got is None, message
        return
    assert got is not None, message
    function = feature.function.value
    if function in ("count", "min", "max", "last", "first"):
        assert got == float(want), message
        return
    xs = [float(e.values[feature.column]) for e in in_window] if feature.column else []
    if function in ("sum", "mean"):
        scale = math.fsum(abs(x) for x in xs) / (len(xs) if function == "mean" else 1)
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9 * scale), message
        return
    if function == "stddev":
        got, want = got * got, want * want
    tolerance = reference.variance_tolerance(xs)
    assert abs(got - want) <= tolerance, f"{message}; tolerance {tolerance!r}"


def check_read(
    view: FeatureView,
    layout: TileLayout,
    applied: Sequence[Event],
    tiles: np.ndarray,
    states: np.ndarray,
    t: int,
) -> None:
    tile_of_t = t // layout.tile_us
    # The documented caveat: tiles cannot split t's own tile, so an online read includes every
    # event of that tile. It equals the formula at t when no applied event after t falls in t's
    # tile (always so at or after the newest event); otherwise it equals the formula at the last
    # microsecond of t's tile. Checking both kinds of read keeps every generated t useful.
    exact = not any(e.ts > t and e.ts // layout.tile_us == tile_of_t for e in applied)
    t_ref = t if exact else (tile_of_t + 1) * layout.tile_us - 1
    where = f"at t={t} (tile {tile_of_t}, {'exact' if exact else f'own tile, as t={t_ref}'})"

    got = reference.features_at(layout, tile_of_t, tiles, states)
    want = reference.view_features(applied, view, t_ref)
    assert sorted(got) == sorted(view.feature_names())
    for feature in layout.features:
        window_us = feature.window_tiles * layout.tile_us
        in_window = reference.window_events(applied, window_us, layout.tile_us, t_ref)
        assert_feature(feature, got[feature.name], want[feature.name], in_window, where)

        tiles_in = (tiles > tile_of_t - feature.window_tiles) & (tiles <= tile_of_t)
        newest = reference.newest(layout, reference.merge(layout, states[tiles_in]))
        want_newest = reference.newest_event(applied, window_us, layout.tile_us, t_ref)
        assert newest == want_newest, f"newest of {feature.name} {where}: {newest}"


# -- random streams --------------------------------------------------------------------------


@dataclass
class Scenario:
    view: FeatureView
    events: list[Event]  # arrival order; offsets increase per partition
    lateness_us: int
    cuts: list[bool]  # cut the applied stream into a new batch after event i
    reads: list[int]
    rng: random.Random


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    tile_s = draw(st.one_of(st.sampled_from([1, 10, 60, 300]), st.integers(1, 300)))
    tile_us = tile_s * SECOND
    pairs = draw(st.lists(st.sampled_from(PAIRS), min_size=1, max_size=5, unique=True))
    aggregations = [
        (function, column, [f"{n * tile_s}s" for n in multiples])
        for function, column in pairs
        for multiples in [draw(st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True))]
    ]
    view = make_view(f"{tile_s}s", aggregations)

    # Times sit on a few nearby tiles, often exactly on a boundary or on its last microsecond;
    # events draw from a small pool of times so equal timestamps (ties for `last`) are common.
    first_tile = T0 // tile_us
    instant = st.builds(
        lambda k, within: (first_tile + k) * tile_us + within,
        st.integers(0, 12),
        st.one_of(st.just(0), st.just(1), st.just(tile_us - 1), st.integers(0, tile_us - 1)),
    )
    pool = draw(st.lists(instant, min_size=1, max_size=15))
    # Amounts anywhere, or all with a large mean and a tiny spread (10000.1, 10000.2 ...): what
    # Chan's merge of (n, mean, M2) exists for, where a sum of squares would cancel.
    amounts = draw(
        st.sampled_from(
            [
                st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                st.integers(-5, 5).map(lambda k: 10_000 + k / 10),
            ]
        )
    )
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(pool),
                st.integers(0, 2),  # partition
                st.integers(1, 3),  # offset step: offsets need not be consecutive
                amounts,
                st.integers(-1000, 1000),
                st.booleans(),
            ),
            max_size=30,
        )
    )
    next_offset = [0, 0, 0]
    events = []
    for ts, partition, step, amount, qty, flag in rows:
        next_offset[partition] += step
        values = {"amount": amount, "qty": qty, "flag": flag}
        events.append(
            Event(ts=ts, partition=partition, offset=next_offset[partition], values=values)
        )

    lateness_us = draw(st.one_of(st.just(10**15), st.integers(0, 3 * tile_us)))
    cuts = draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))

    # Reads before, among and after the events, on boundaries and just before them, and far
    # enough after that every window has expired.
    times = sorted({e.ts for e in events}) or [T0]
    near = st.builds(lambda ts, d: ts + d, st.sampled_from(times), st.sampled_from([-1, 0, 1]))
    boundary = st.builds(
        lambda k, d: k * tile_us + d,
        st.integers(times[0] // tile_us - 1, times[-1] // tile_us + 10),
        st.sampled_from([-1, 0, 0, 1]),
    )
    later = st.builds(lambda d: times[-1] + d, st.integers(0, 12 * tile_us))
    reads = draw(st.lists(st.one_of(near, boundary, later), min_size=1, max_size=8))
    reads.append(times[-1])
    return Scenario(view, events, lateness_us, cuts, reads, draw(st.randoms()))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_tiles_match_the_reference(scenario: Scenario) -> None:
    view = scenario.view
    layout = TileLayout(view)
    applied, _late = reference.apply_lateness(scenario.events, scenario.lateness_us)

    batches: list[list[Event]] = [[]]
    for event, cut in zip(applied, scenario.cuts, strict=False):
        batches[-1].append(event)
        if cut:
            batches.append([])
    for batch in batches:
        scenario.rng.shuffle(batch)  # reduce must not lean on the order of rows in a batch
    rows = [row for batch in batches for row in reduce_batch(layout, batch)]

    # Reads must agree whether the store holds one merged state per tile or every batch state.
    merged_tiles, merged_states = store(layout, rows, scenario.rng)
    raw_tiles, raw_states = as_arrays(layout, rows)
    for t in scenario.reads:
        check_read(view, layout, applied, merged_tiles, merged_states, t)
        check_read(view, layout, applied, raw_tiles, raw_states, t)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_merge_is_associative_and_commutative(scenario: Scenario) -> None:
    """Any grouping and order of merging the states of one tile gives the same state."""
    layout = TileLayout(scenario.view)
    # merge ignores which tile a state is for: single-event states stand in for one tile's
    # batch states, many of them to fold.
    states = [state for e in scenario.events for _, state in reduce_batch(layout, [e])]
    if len(states) < 2:
        return
    flat = reference.merge(layout, np.stack(states))
    rng = scenario.rng

    def fold(pending: list[np.ndarray]) -> np.ndarray:
        """A random binary tree of merges over the states in this order."""
        if len(pending) == 1:
            return pending[0]
        split = rng.randint(1, len(pending) - 1)
        return reference.merge(layout, np.stack([fold(pending[:split]), fold(pending[split:])]))

    for _ in range(3):
        shuffled = list(states)
        rng.shuffle(shuffled)
        folded = fold(shuffled)
        for index, merge in enumerate(layout.merges):
            a, b = folded[index], flat[index]
            if merge.value in "aVv":  # sums and moments: equal up to float rounding
                scale = np.abs(np.stack(states)[:, index]).sum()
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * scale), (index, a, b)
            else:
                assert a == b, (index, merge, a, b)


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.integers(1, 5), st.data())
def test_merge_many_equals_merge_per_entity(
    scenario: Scenario, entities: int, data: st.DataObject
) -> None:
    """A batch read folds each entity's rows alone: no row leaks into another entity's state,
    and never-written tiles (NaN rows) are skipped, as `merge` of that entity alone does."""
    layout = TileLayout(scenario.view)
    states = [state for e in scenario.events for _, state in reduce_batch(layout, [e])]
    rows = data.draw(st.integers(0, 6))
    missing = np.full(layout.width, np.nan)
    pool = [*states, missing]
    batch = np.array(
        [
            [pool[data.draw(st.integers(0, len(pool) - 1))] for _ in range(rows)]
            for _ in range(entities)
        ]
    ).reshape(entities, rows, layout.width)
    together = reference.merge_many(layout, batch)
    # The same states as every window of a read: each entity's values come from its own alone.
    windows = np.repeat(together[:, np.newaxis], len(layout.windows), axis=1)
    values, times = layout.finish(windows)
    for e in range(entities):
        alone = reference.merge(layout, batch[e])
        np.testing.assert_array_equal(together[e], alone)
        one, one_times = layout.finish(
            np.repeat(alone[np.newaxis, np.newaxis], windows.shape[1], 1)
        )
        np.testing.assert_array_equal(values[e], one[0])
        np.testing.assert_array_equal(times[e], one_times[0])


@settings(max_examples=50, deadline=None)
@given(scenarios(), st.data())
def test_finish_reads_a_never_written_window_as_empty(
    scenario: Scenario, data: st.DataObject
) -> None:
    """The fold script sends NaN for a window without any state: `finish` gives it the values
    of an empty window (count 0, sum 0, the rest null), the other windows untouched."""
    layout = TileLayout(scenario.view)
    states = [state for e in scenario.events for _, state in reduce_batch(layout, [e])]
    lengths = len(layout.windows)
    written = reference.merge(layout, np.stack(states)) if states else layout.empty()
    blank = [data.draw(st.booleans()) for _ in range(lengths)]
    sent = np.stack([np.full(layout.width, np.nan) if b else written for b in blank])
    meant = np.stack([layout.empty() if b else written for b in blank])
    got, got_times = layout.finish(sent[np.newaxis])
    want, want_times = layout.finish(meant[np.newaxis])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_times, want_times)
    for f, feature in enumerate(layout.features):
        if blank[layout.windows.index(feature.window)]:
            empty_value = 0.0 if feature.function.value in ("count", "sum") else None
            value = None if np.isnan(got[0, f]) else got[0, f]
            if feature.function.value != "approx_count_distinct":
                assert value == empty_value, (feature, value)
            assert np.isnan(got_times[0, f])


# -- hand-picked cases ------------------------------------------------------------------------


def ev(ts: int, amount: float = 1.0, partition: int = 0, offset: int = 0) -> Event:
    return Event(ts=ts, partition=partition, offset=offset, values={"amount": amount})


def online(view: FeatureView, events: Sequence[Event], t: int) -> dict[str, float | None]:
    layout = TileLayout(view)
    tiles, states = as_arrays(layout, reduce_batch(layout, events))
    return reference.features_at(layout, t // layout.tile_us, tiles, states)


ALL_FUNCTIONS = make_view(
    "1m",
    [
        ("count", None, ["2m"]),
        ("sum", "amount", ["2m"]),
        ("mean", "amount", ["2m"]),
        ("min", "amount", ["2m"]),
        ("max", "amount", ["2m"]),
        ("variance", "amount", ["2m"]),
        ("stddev", "amount", ["2m"]),
        ("last", "amount", ["2m"]),
    ],
)


def test_event_exactly_on_a_boundary_belongs_to_the_tile_it_starts() -> None:
    view = make_view("1m", [("count", None, ["2m"])])
    on_boundary, just_before = ev(T0 + 2 * MINUTE, offset=1), ev(T0 + 2 * MINUTE - 1, offset=0)
    events = [just_before, on_boundary]
    expected = {
        T0 + 2 * MINUTE - 1: 1.0,  # tiles 0..1: only the event before the boundary
        T0 + 2 * MINUTE: 2.0,  # tiles 1..2: both, the boundary event is in tile 2
        T0 + 3 * MINUTE - 1: 2.0,
        T0 + 3 * MINUTE: 1.0,  # tiles 2..3: the earlier event's tile 1 left the window
        T0 + 4 * MINUTE - 1: 1.0,
        T0 + 4 * MINUTE: 0.0,  # tiles 3..4: the boundary event left too
    }
    for t, count in expected.items():
        assert online(view, events, t) == {"count_2m": count}, t
        assert reference.feature_value(events, "count", None, 2 * MINUTE, MINUTE, t) == count


def test_window_expires_to_empty_values_without_new_events() -> None:
    events = [ev(T0 + 10 * SECOND, 3.0, offset=0), ev(T0 + 70 * SECOND, 5.0, offset=1)]
    assert online(ALL_FUNCTIONS, events, T0 + 70 * SECOND) == {
        "count_2m": 2.0,
        "amount_sum_2m": 8.0,
        "amount_mean_2m": 4.0,
        "amount_min_2m": 3.0,
        "amount_max_2m": 5.0,
        "amount_variance_2m": 2.0,
        "amount_stddev_2m": math.sqrt(2.0),
        "amount_last_2m": 5.0,
    }
    empty = {
        "count_2m": 0.0,
        "amount_sum_2m": 0.0,
        "amount_mean_2m": None,
        "amount_min_2m": None,
        "amount_max_2m": None,
        "amount_variance_2m": None,
        "amount_stddev_2m": None,
        "amount_last_2m": None,
    }
    assert online(ALL_FUNCTIONS, events, T0 + 3 * MINUTE) == empty
    assert reference.view_features(events, ALL_FUNCTIONS, T0 + 3 * MINUTE) == empty
    layout = TileLayout(ALL_FUNCTIONS)
    tiles, states = as_arrays(layout, reduce_batch(layout, events))

    def newest(tile_of_t: int) -> int | None:
        in_window = (tiles > tile_of_t - 2) & (tiles <= tile_of_t)
        return reference.newest(layout, reference.merge(layout, states[in_window]))

    assert newest(T0 // MINUTE + 2) == T0 + 70 * SECOND
    assert newest(T0 // MINUTE + 3) is None
    # A view with no tiles at all reads the same empty values.
    assert online(ALL_FUNCTIONS, [], T0) == empty


def test_variance_and_stddev_need_two_events() -> None:
    one = online(ALL_FUNCTIONS, [ev(T0, 4.0)], T0)
    assert one["amount_variance_2m"] is None and one["amount_stddev_2m"] is None
    two = online(ALL_FUNCTIONS, [ev(T0, 4.0, offset=0), ev(T0, 4.0, offset=1)], T0)
    assert two["amount_variance_2m"] == 0.0 and two["amount_stddev_2m"] == 0.0


def test_last_breaks_ties_by_partition_then_offset_across_batches() -> None:
    view = make_view("1m", [("last", "amount", ["1m"])])
    layout = TileLayout(view)
    events = [
        ev(T0 + 5, 1.0, partition=2, offset=7),
        ev(T0 + 5, 2.0, partition=2, offset=9),  # the winner: same ts, same partition, later
        ev(T0 + 5, 3.0, partition=1, offset=50),
        ev(T0 + 4, 4.0, partition=3, offset=99),  # older, whatever its partition
    ]
    assert reference.feature_value(events, "last", "amount", MINUTE, MINUTE, T0 + 5) == 2.0
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        rows = [row for i in order for row in reduce_batch(layout, [events[i]])]
        tiles, states = as_arrays(layout, rows)
        assert reference.features_at(layout, T0 // MINUTE, tiles, states) == {"amount_last_1m": 2.0}
        tiles, states = as_arrays(layout, reduce_batch(layout, [events[i] for i in order]))
        assert reference.features_at(layout, T0 // MINUTE, tiles, states) == {"amount_last_1m": 2.0}


def test_first_breaks_ties_by_partition_then_offset_across_batches() -> None:
    view = make_view("1m", [("first", "amount", ["1m"])])
    layout = TileLayout(view)
    events = [
        ev(T0 + 5, 1.0, partition=2, offset=7),
        ev(T0 + 5, 2.0, partition=1, offset=9),  # the winner: same ts, the lower partition
        ev(T0 + 5, 3.0, partition=1, offset=50),
        ev(T0 + 6, 4.0, partition=0, offset=1),  # newer, whatever its partition
    ]
    assert reference.feature_value(events, "first", "amount", MINUTE, MINUTE, T0 + 6) == 2.0
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        rows = [row for i in order for row in reduce_batch(layout, [events[i]])]
        tiles, states = as_arrays(layout, rows)
        got = reference.features_at(layout, T0 // MINUTE, tiles, states)
        assert got == {"amount_first_1m": 2.0}
        tiles, states = as_arrays(layout, reduce_batch(layout, [events[i] for i in order]))
        got = reference.features_at(layout, T0 // MINUTE, tiles, states)
        assert got == {"amount_first_1m": 2.0}


def test_online_read_includes_its_whole_own_tile() -> None:
    """The documented caveat, pinned: a read at t cannot exclude a later event of t's tile."""
    view = make_view("1m", [("count", None, ["1m"])])
    events = [ev(T0 + 10 * SECOND, offset=0), ev(T0 + 50 * SECOND, offset=1)]
    t = T0 + 30 * SECOND
    assert reference.feature_value(events, "count", None, MINUTE, MINUTE, t) == 1
    assert online(view, events, t) == {"count_1m": 2.0}


def test_reference_lateness_is_per_partition_in_offset_order() -> None:
    lateness = 10
    events = [
        {"ts": 100, "partition": 0, "offset": 1},
        {"ts": 90, "partition": 0, "offset": 2},  # exactly M - lateness: applied
        {"ts": 89, "partition": 0, "offset": 3},  # late
        {"ts": 50, "partition": 1, "offset": 1},  # another partition has its own watermark
        {"ts": 80, "partition": 0, "offset": 0},  # first by offset, though last in this list
        {"ts": 0, "partition": 1, "offset": 0},
    ]
    applied, late = reference.apply_lateness(events, lateness)
    assert late == [events[2]]
    assert applied == [e for e in events if e is not events[2]]
    # A late event does not move the watermark; the same events replayed decide the same.
    assert reference.apply_lateness([*events, {"ts": 91, "partition": 0, "offset": 4}], 10)[1] == [
        events[2]
    ]


# -- numerics --------------------------------------------------------------------------------


def test_variance_of_large_close_values_is_accurate() -> None:
    view = make_view("1m", [("variance", "amount", ["1m"])])
    events = [ev(T0, 10_000.1, offset=0), ev(T0, 10_000.2, offset=1), ev(T0, 10_000.3, offset=2)]
    want = reference.feature_value(events, "variance", "amount", MINUTE, MINUTE, T0)
    got = online(view, events, T0)["amount_variance_1m"]
    assert got is not None and math.isclose(got, want, rel_tol=1e-9), (got, want)


def test_merge_of_nothing_is_neutral() -> None:
    layout = TileLayout(ALL_FUNCTIONS)
    (_, state), *_ = reduce_batch(layout, [ev(T0, 4.0)])
    empty = reference.merge(layout, np.full((1, layout.width), np.nan))
    both = reference.merge(layout, np.stack([empty, state]))
    np.testing.assert_array_equal(both, reference.merge(layout, state[None, :]))
