"""Brute-force reference model of docs/semantics.md, for tests to hold the real engine against.

Written straight from the documented formulas with plain loops over raw events; slow on purpose
and small enough to check by eye. Timestamps are integer microseconds since the epoch (UTC).

An event is a mapping (`{"ts": ..., "partition": ..., "offset": ..., "amount": ...}`) or an
`Event`; `value(event, name)` reads either.

>>> events = [Event(ts=10, partition=0, offset=0, values={"amount": 2.0}),
...           Event(ts=25, partition=0, offset=1, values={"amount": 5.0})]
>>> feature_value(events, "sum", "amount", window_us=20, tile_us=10, t_us=25)
7.0
>>> feature_value(events, "sum", "amount", window_us=20, tile_us=10, t_us=30)  # far edge moved
5.0
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from featurestore.definitions import Function
from featurestore.tiles import Merge, TileLayout
from featurestore.windows import TileWindow, WindowRange, window_range

FUNCTIONS = (
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "variance",
    "stddev",
    "last",
    "first",
    "last_n",
    "top_k",
    "approx_count_distinct",
    "approx_percentile",
)


@dataclass(frozen=True)
class Event:
    ts: int
    partition: int
    offset: int
    values: Mapping[str, Any] = field(default_factory=dict)


EventLike = Event | Mapping[str, Any]
E = TypeVar("E", bound=EventLike)  # lists of events come back with the type they went in with


def value(event: EventLike, name: str) -> Any:
    """The field `name` of an event: `ts`, `partition`, `offset` or a column."""
    if isinstance(event, Mapping):
        return event[name]
    if name in ("ts", "partition", "offset"):
        return getattr(event, name)
    return event.values[name]


def order_key(event: EventLike) -> tuple[int, int, int]:
    """Newest-last order: event time, ties broken by the later (partition, offset)."""
    return (value(event, "ts"), value(event, "partition"), value(event, "offset"))


def apply_lateness(events: Iterable[E], allowed_lateness_us: int) -> tuple[list[E], list[E]]:
    """Split events into (applied, late), each in input order.

    Per partition, in offset order, the watermark M is the newest event time seen before the
    event; the event is late iff ts < M - allowed_lateness. Late events never move M (they are
    older than it anyway).
    """
    pending = list(events)
    late: set[int] = set()  # indices into events
    for partition in sorted({value(e, "partition") for e in events}):
        mine = [i for i, e in enumerate(pending) if value(e, "partition") == partition]
        mine.sort(key=lambda i: value(pending[i], "offset"))
        watermark: int | None = None
        for i in mine:
            ts = value(pending[i], "ts")
            if watermark is not None and ts < watermark - allowed_lateness_us:
                late.add(i)
                continue
            watermark = ts if watermark is None else max(watermark, ts)
    applied = [e for i, e in enumerate(pending) if i not in late]
    return applied, [e for i, e in enumerate(pending) if i in late]


def tile_of(ts_us: int, tile_us: int) -> int:
    """floor(e / T): an event exactly on a boundary k·T belongs to tile k."""
    return ts_us // tile_us  # Python's // floors, also for times before the epoch


Window = int | str  # a sliding window's length in µs, or a window as definitions write it


def in_window(ts_us: int, window: Window, tile_us: int, t_us: int) -> bool:
    """Whether an event at `ts_us` is in `window` at read time `t_us`: the tiles of
    `featurestore.windows.window_range` (for a sliding window of n tiles, floor(e/T) >=
    floor(t/T) - n + 1) and e <= t."""
    return _range(window, tile_us, t_us).contains(ts_us, tile_us) and ts_us <= t_us


def _range(window: Window, tile_us: int, t_us: int) -> WindowRange:
    if isinstance(window, int):
        if window <= 0 or window % tile_us:
            raise ValueError(f"window {window} is not a positive multiple of the tile {tile_us}")
        return window_range(TileWindow(window // tile_us, 1, 0), tile_us, t_us)
    return window_range(window, tile_us, t_us)


def window_events(events: Iterable[E], window: Window, tile_us: int, t_us: int) -> list[E]:
    return [e for e in events if in_window(value(e, "ts"), window, tile_us, t_us)]


def aggregate(events: Sequence[EventLike], function: str, column: str | None) -> Any:
    """One function over exactly these events (already chosen by the window)."""
    function = str(function)
    if function == "count":
        return len(events)
    if function == "last":
        if not events:
            return None
        newest = events[0]
        for event in events[1:]:
            if order_key(event) > order_key(newest):
                newest = event
        return value(newest, _need(column, function))
    if function == "first":
        if not events:
            return None
        oldest = min(events, key=order_key)
        return value(oldest, _need(column, function))
    xs = [value(e, _need(column, function)) for e in events]
    if function == "sum":
        return math.fsum(float(x) for x in xs)  # fsum: the correctly rounded sum
    if function == "approx_count_distinct":
        return len(set(xs))  # the exact number the HyperLogLog estimates
    if not xs:
        return None
    if function == "mean":
        return math.fsum(float(x) for x in xs) / len(xs)
    if function == "min":
        smallest = xs[0]
        for x in xs[1:]:
            smallest = min(smallest, x)
        return float(smallest)
    if function == "max":
        largest = xs[0]
        for x in xs[1:]:
            largest = max(largest, x)
        return float(largest)
    if function in ("variance", "stddev"):
        if len(xs) < 2:
            return None
        # Two passes: mean first, then squared deviations from it (sample variance, n - 1).
        mean = math.fsum(float(x) for x in xs) / len(xs)
        variance = math.fsum((float(x) - mean) ** 2 for x in xs) / (len(xs) - 1)
        return variance if function == "variance" else math.sqrt(variance)
    raise ValueError(f"unknown function {function!r}; expected one of {FUNCTIONS}")


EPSILON = sys.float_info.epsilon


def variance_tolerance(xs: Sequence[float]) -> float:
    """How far a float computation of the sample variance of `xs` may be from `aggregate`'s.

    1e-9 of the variance itself, widened only by what the data's conditioning forces on any
    method that starts from rounded means (a two-pass state per tile, Chan et al.'s merge of
    (n, mean, M2)): an error of about n·ε·κ of the variance, κ² = Σx² / Σ(x - x̄)² (Chan, Golub
    and LeVeque, 1983), plus (n·ε)² of Σx²/(n-1) from the mean's own rounding. For 10000.1,
    10000.2 and 10000.3 that is 1.7e-9 of the variance; a sum of squares (Σx² - n·x̄²) errs there
    by ~1e-5 of it, which is why a tolerance of 1e-9·Σx²/(n-1) (15 variances) proved nothing.

    >>> round(variance_tolerance([10_000.1, 10_000.2, 10_000.3]) / 0.01, 10)
    1.7e-09
    """
    n = len(xs)
    variance = aggregate([{"x": x} for x in xs], "variance", "x")
    if variance is None:
        raise ValueError("a sample variance needs two values")
    power = math.fsum(x * x for x in xs) / (n - 1)
    fuzz = 8 * n * EPSILON
    return float(1e-9 * variance + fuzz * math.sqrt(power * variance) + fuzz**2 * power)


def feature_value(
    events: Iterable[EventLike],
    function: str,
    column: str | None,
    window_us: Window,
    tile_us: int,
    t_us: int,
) -> Any:
    """The value of `function(column)` over window `window_us` at read time `t_us`.

    `events` are the applied events (see `apply_lateness`). count 0 and sum 0.0 on an empty
    window, None for the other functions; variance and stddev are None below 2 events.
    """
    return aggregate(window_events(events, window_us, tile_us, t_us), function, column)


def newest_event(
    events: Iterable[EventLike], window_us: Window, tile_us: int, t_us: int
) -> int | None:
    """The event time of the newest event in the window, None when the window is empty."""
    newest: int | None = None
    for event in window_events(events, window_us, tile_us, t_us):
        ts = value(event, "ts")
        if newest is None or ts > newest:
            newest = ts
    return newest


def newest_values(events: Sequence[EventLike], column: str, n: int) -> list[Any] | None:
    """`last_n`: the values of the n newest events by (time, partition, offset), newest first;
    None when there are none."""
    ordered = sorted(events, key=order_key, reverse=True)[:n]
    return [value(e, column) for e in ordered] or None


def most_frequent(events: Sequence[EventLike], column: str, k: int) -> list[str] | None:
    """`top_k`: the k values occurring most often, most first, ties by the smaller value;
    None when there are none. Counted by brute force, one value at a time."""
    counts: dict[str, int] = {}
    for event in events:
        v = value(event, column)
        counts[v] = counts.get(v, 0) + 1
    ranked = sorted(counts, key=lambda v: (-counts[v], v))
    return ranked[:k] or None


def order_statistic(events: Sequence[EventLike], column: str, q: float) -> float | None:
    """The exact value of rank floor(q·(n - 1)) (0-based, ascending) among the events' values:
    what `approx_percentile` approximates, within its relative accuracy. None when empty."""
    xs = sorted(float(value(e, column)) for e in events)
    if not xs:
        return None
    return xs[math.floor(q * (len(xs) - 1))]


def view_features(events: Iterable[EventLike], view: Any, t_us: int) -> dict[str, Any]:
    """Every feature of a `FeatureView` at `t_us`, by feature name, from the applied events.

    A percentile feature's value is the exact order statistic it approximates
    (`order_statistic`); `percentile_matches` says whether a sketch's answer fits it."""
    applied = list(events)
    out: dict[str, Any] = {}
    for agg in view.aggregations:
        for name, window, q in agg.feature_specs():
            if str(agg.function) == "top_k":
                chosen = window_events(applied, window, view.tile_us, t_us)
                out[name] = most_frequent(chosen, _need(agg.column, "top_k"), agg.k)
                continue
            if str(agg.function) == "last_n":
                chosen = window_events(applied, window, view.tile_us, t_us)
                out[name] = newest_values(chosen, _need(agg.column, "last_n"), agg.n)
                continue
            if q is not None:
                chosen = window_events(applied, window, view.tile_us, t_us)
                out[name] = order_statistic(chosen, _need(agg.column, "approx_percentile"), q)
                continue
            out[name] = feature_value(applied, agg.function, agg.column, window, view.tile_us, t_us)

    return out


def percentile_matches(got: float | None, exact: float | None, alpha: float) -> bool:
    """Whether a sketch's percentile fits the exact order statistic: both None, or within a
    relative `alpha` of it (DDSketch's guarantee; a hair of float rounding at bucket edges)."""
    if got is None or exact is None:
        return got is None and exact is None
    return abs(got - exact) <= alpha * abs(exact) * (1 + 1e-9) + 1e-300


def _need(column: str | None, function: str) -> str:
    if column is None:
        raise ValueError(f"{function} needs a column")
    return column


# -- the tile merge ---------------------------------------------------------------------------
# A numpy copy of the merge the Lua scripts do in Redis (featurestore/online.py), over the slots
# of a `TileLayout`: with it the tests drive the online path (reduce -> merge -> finish) without
# a server and hold it to the formulas above.

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def merge(layout: TileLayout, states: F64) -> F64:
    """Fold states (rows) into one with the slots' merge rules.

    Rows whose count is NaN stand for tiles that were never written and are skipped; with none
    left the result is `layout.empty()`, which merges neutrally with anything.
    """
    merged: F64 = merge_many(layout, states[np.newaxis])[0]
    return merged


def merge_many(layout: TileLayout, states: F64) -> F64:
    """`merge` for many entities at once: (entities, rows, width) -> (entities, width)."""
    entities, rows, _width = states.shape
    out = np.tile(layout.empty(), (entities, 1))
    if rows == 0:
        return out
    present = ~np.isnan(states[:, :, layout.COUNT])
    for index, rule in enumerate(layout.merges):
        column = states[:, :, index]
        if rule is Merge.ADD:
            out[:, index] = np.where(present, column, 0.0).sum(axis=1)
        elif rule is Merge.MAX:
            out[:, index] = np.where(present, column, -np.inf).max(axis=1)
        elif rule is Merge.MIN:
            out[:, index] = np.where(present, column, np.inf).min(axis=1)
        elif rule is Merge.LAST:
            # The row with the greatest (time, partition, offset): narrow the candidates one
            # key at a time, as a lexicographic comparison does.
            candidates = present
            for part in range(3):
                key = np.where(candidates, states[:, :, index + part], -np.inf)
                candidates = candidates & (key == key.max(axis=1, keepdims=True))
            best = candidates.argmax(axis=1)
            chosen = states[np.arange(entities), best, index : index + 4]
            found = candidates.any(axis=1)
            out[found, index : index + 4] = chosen[found]
        elif rule is Merge.FIRST:
            # The row with the least (time, partition, offset), as LAST the greatest.
            candidates = present
            for part in range(3):
                key = np.where(candidates, states[:, :, index + part], np.inf)
                candidates = candidates & (key == key.min(axis=1, keepdims=True))
            best = candidates.argmax(axis=1)
            chosen = states[np.arange(entities), best, index : index + 4]
            found = candidates.any(axis=1)
            out[found, index : index + 4] = chosen[found]
        elif rule is Merge.MOMENTS:
            n = np.where(present, column, 0.0)
            means = np.where(present, states[:, :, index + 1], 0.0)
            m2 = np.where(present, states[:, :, index + 2], 0.0)
            total = n.sum(axis=1)
            some = total > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = (n * means).sum(axis=1) / total
            spread = m2.sum(axis=1) + (n * (means - mean[:, np.newaxis]) ** 2).sum(axis=1)
            out[some, index] = total[some]
            out[some, index + 1] = mean[some]
            out[some, index + 2] = spread[some]
    return out


def features_at(
    layout: TileLayout, tile_of_t: int, tiles: I64, states: F64
) -> dict[str, float | None]:
    """Feature values at a read time in tile `tile_of_t`, from the states of `tiles`."""
    spans = [window_range(w, layout.tile_us, tile_of_t * layout.tile_us) for w in layout.windows]
    windows = np.stack(
        [
            merge(
                layout,
                states[(tiles >= (-(2**62) if s.first is None else s.first)) & (tiles <= s.last)],
            )
            for s in spans
        ]
    )
    values, _times = layout.finish(windows[np.newaxis])
    return {
        feature.name: None if math.isnan(value) else value
        for feature, value in zip(layout.features, values[0].tolist(), strict=True)
        # Distinct counts and percentiles come from side structures, see online.read_views.
        if feature.function not in (Function.APPROX_COUNT_DISTINCT, Function.APPROX_PERCENTILE)
    }


def newest(layout: TileLayout, merged: F64) -> int | None:
    """Event time of the newest event in a merged state; None when it holds none."""
    value = merged[layout.NEWEST]
    return int(value) if np.isfinite(value) else None
