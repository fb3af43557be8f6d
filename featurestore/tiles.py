"""Tile states: how a view's events are summarised per tile, merged, and turned into features.

A tile state is a fixed-length vector of float64 slots, laid out per view by `TileLayout`. Each
slot has a merge rule: add (counts, sums, sums of squares), max, min, or part of a `last` group
(event time, partition, offset, value — the lexicographically greatest key wins) or of a
`first` group (the least key wins). The worker
reduces a batch of events to one state per (entity, tile) with numpy, Redis merges those into
stored states with the same rules (see `online.py`), and reads fold the tiles of a window into
feature values. float64 holds microsecond timestamps exactly (< 2**53). The merge itself runs
only in Redis (Lua); tests/reference.py holds a numpy copy of it to check the rules against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, StrEnum

import numpy as np
import numpy.typing as npt

from featurestore.definitions import FeatureView, Function, ValueType
from featurestore.windows import TileWindow, tile_window

__all__ = [
    "F64",
    "I64",
    "Feature",
    "Merge",
    "TileLayout",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Merge(StrEnum):
    ADD = "a"
    MAX = "x"
    MIN = "n"
    LAST = "L"  # first slot of a 4-slot group: (event time, partition, offset, value)
    LAST_PART = "l"  # the other three slots of that group
    MOMENTS = "V"  # first slot of a 3-slot group: (n, mean, M2), merged with Chan's formula
    MOMENTS_PART = "v"
    FIRST = "F"  # as LAST, but the least (event time, partition, offset) wins
    FIRST_PART = "f"


# Groups of slots that merge together: their first slot's name and the names of all of them.
_GROUPS = {
    "last": (Merge.LAST, Merge.LAST_PART, ("last_ts", "last_p", "last_o", "last_v")),
    "moments": (Merge.MOMENTS, Merge.MOMENTS_PART, ("var_n", "var_mean", "var_m2")),
    "first": (Merge.FIRST, Merge.FIRST_PART, ("first_ts", "first_p", "first_o", "first_v")),
}
# The identity of each merge rule: what an empty tile holds.
_EMPTY = {
    Merge.ADD: 0.0,
    Merge.MAX: -np.inf,
    Merge.MIN: np.inf,
    Merge.LAST: -np.inf,
    Merge.LAST_PART: -np.inf,
    Merge.MOMENTS: 0.0,
    Merge.MOMENTS_PART: 0.0,
    Merge.FIRST: np.inf,
    Merge.FIRST_PART: np.inf,
}


@dataclass(frozen=True)
class Feature:
    name: str
    function: Function
    column: str | None
    window_tiles: int  # the window's length in tiles (0: lifetime)
    window: TileWindow  # its kind in tiles: `featurestore.windows.window_range` reads it
    quantile: float | None = None  # approx_percentile: which one
    accuracy: float | None = None  # approx_percentile: its sketch's relative accuracy α
    # What its value is: float64 for all but `first` / `last` of a string column (a string)
    # and `last_n` (a list of values of its column's type, strings or float64).
    value_type: ValueType = ValueType.FLOAT64
    n: int | None = None  # last_n: how many values; top_k: its k

    @property
    def aside(self) -> bool:
        """Whether its value is kept outside the float slots (a string or a list)."""
        return self.value_type is ValueType.STRING or self.function in (
            Function.LAST_N,
            Function.TOP_K,
        )


class TileLayout:
    """Slot positions for one feature view.

    >>> from featurestore.definitions import *
    >>> src = KafkaSource(name="s", topic="t", timestamp_field="ts",
    ...                   schema={"user": "string", "amount": "float64"})
    >>> view = FeatureView(name="v", entities=[Entity(name="user")], source=src,
    ...     aggregations=[Aggregation(column="amount", function="mean", windows=["2m"])])
    >>> TileLayout(view).merge_codes()
    'axa'
    """

    COUNT = 0
    NEWEST = 1  # event time of the newest event in the tile

    def __init__(self, view: FeatureView) -> None:
        self.view = view
        self.tile_us = view.tile_us
        self.slots: dict[str, int] = {"count": self.COUNT, "newest": self.NEWEST}
        self.merges: list[Merge] = [Merge.ADD, Merge.MAX]
        self.features: list[Feature] = []
        # Distinct counts are not slots: each tile keeps a Redis HyperLogLog per column.
        self.distinct_columns: list[str] = []
        # Neither are percentiles: each tile keeps a Redis hash of bucket counts per (column,
        # accuracy) sketch (featurestore/percentiles.py).
        self.sketches: list[tuple[str, float]] = []
        # Nor are `first` / `last` of string columns: each tile keeps the winning event's
        # (time, partition, offset) and value in a Redis string per (column, function).
        self.picks: list[tuple[str, Function]] = []
        # Nor are `last_n`: each tile keeps its n newest events in a Redis string per (column,
        # n), newest first.
        self.newest: list[tuple[str, int]] = []
        # Nor are `top_k`: each tile counts its events per value of the column, in a Redis
        # hash like a percentile sketch's (`value_counts`).
        self.counted: list[str] = []
        for agg in view.aggregations:
            if agg.function is Function.TOP_K and agg.column is not None:
                if agg.column not in self.counted:
                    self.counted.append(agg.column)
                for window, name in zip(agg.windows, agg.feature_names(), strict=True):
                    spec = tile_window(window, self.tile_us)
                    self.features.append(
                        Feature(
                            name,
                            agg.function,
                            agg.column,
                            spec.length,
                            spec,
                            value_type=ValueType.STRING,
                            n=agg.k,
                        )
                    )
                continue
            if agg.function is Function.LAST_N and agg.column is not None and agg.n is not None:
                if (agg.column, agg.n) not in self.newest:
                    self.newest.append((agg.column, agg.n))
                kind = view.source.schema_[agg.column]
                element = ValueType.STRING if kind is ValueType.STRING else ValueType.FLOAT64
                for window, name in zip(agg.windows, agg.feature_names(), strict=True):
                    spec = tile_window(window, self.tile_us)
                    self.features.append(
                        Feature(
                            name,
                            agg.function,
                            agg.column,
                            spec.length,
                            spec,
                            value_type=element,
                            n=agg.n,
                        )
                    )
                continue
            if (
                agg.function in (Function.FIRST, Function.LAST)
                and agg.column is not None
                and view.source.schema_[agg.column] is ValueType.STRING
            ):
                if (agg.column, agg.function) not in self.picks:
                    self.picks.append((agg.column, agg.function))
                for window, name in zip(agg.windows, agg.feature_names(), strict=True):
                    spec = tile_window(window, self.tile_us)
                    self.features.append(
                        Feature(
                            name,
                            agg.function,
                            agg.column,
                            spec.length,
                            spec,
                            value_type=ValueType.STRING,
                        )
                    )
                continue
            if agg.function is Function.APPROX_PERCENTILE:
                assert agg.column is not None  # noqa: S101 - validated by Aggregation
                if (agg.column, agg.accuracy) not in self.sketches:
                    self.sketches.append((agg.column, agg.accuracy))
                for name, window, q in agg.feature_specs():
                    spec = tile_window(window, self.tile_us)
                    self.features.append(
                        Feature(name, agg.function, agg.column, spec.length, spec, q, agg.accuracy)
                    )
                continue
            if agg.function is Function.APPROX_COUNT_DISTINCT:
                assert agg.column is not None  # noqa: S101 - validated by Aggregation
                if agg.column not in self.distinct_columns:
                    self.distinct_columns.append(agg.column)
            for slot in _slots_for(agg.function, agg.column):
                self._add_slot(slot)
            for window, name in zip(agg.windows, agg.feature_names(), strict=True):
                spec = tile_window(window, self.tile_us)
                self.features.append(Feature(name, agg.function, agg.column, spec.length, spec))
        self._empty = self.empty()
        self._empty_list: list[float] = self._empty.tolist()
        self._finish = _FinishPlan.of(self)

    def _add_slot(self, slot: str) -> None:
        if slot in self.slots:
            return
        kind, _, column = slot.partition(":")
        if kind in _GROUPS:
            first, rest, parts = _GROUPS[kind]
            for i, part in enumerate(parts):
                self.slots[f"{part}:{column}"] = len(self.merges)
                self.merges.append(first if i == 0 else rest)
            self.slots[slot] = self.slots[f"{parts[0]}:{column}"]
            return
        self.slots[slot] = len(self.merges)
        self.merges.append({"sum": Merge.ADD, "max": Merge.MAX, "min": Merge.MIN}[kind])

    @property
    def windows(self) -> tuple[TileWindow, ...]:
        """The features' distinct windows in the order reads fold them: windows that end on the
        same tile (same step and lag) together, shortest first, so each extends the one before;
        lifetime last."""
        return tuple(sorted({f.window for f in self.features}, key=_fold_order))

    @property
    def width(self) -> int:
        return len(self.merges)

    def merge_codes(self) -> str:
        return "".join(m.value for m in self.merges)

    def empty(self) -> F64:
        """The state of a tile without events: the identity of every merge rule."""
        return np.array([_EMPTY[m] for m in self.merges])

    @property
    def columns(self) -> list[str]:
        """Source columns the tiles need."""
        return sorted({slot.split(":", 1)[1] for slot in self.slots if ":" in slot})

    # -- events -> tile states -------------------------------------------------------------

    def reduce(
        self,
        group: I64,
        n_groups: int,
        ts: I64,
        partition: I64,
        offset: I64,
        columns: dict[str, F64],
    ) -> F64:
        """One state per group (e.g. per entity and tile) from events labelled `group`."""
        out = np.tile(self.empty(), (n_groups, 1))
        count = np.bincount(group, minlength=n_groups).astype(np.float64)
        out[:, self.COUNT] = count
        np.maximum.at(out[:, self.NEWEST], group, ts.astype(np.float64))
        for slot, index in self.slots.items():
            kind, _, column = slot.partition(":")
            if not column:
                continue
            values = columns[column]
            if kind == "sum":
                out[:, index] = np.bincount(group, weights=values, minlength=n_groups)
            elif kind == "max":
                np.maximum.at(out[:, index], group, values)
            elif kind == "min":
                np.minimum.at(out[:, index], group, values)
            elif kind == "moments":
                # Two passes per tile (mean, then squared deviations): no cancellation.
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.bincount(group, weights=values, minlength=n_groups) / count
                deviations = values - mean[group]
                out[:, index] = count
                out[:, index + 1] = np.where(count > 0, mean, 0.0)
                out[:, index + 2] = np.bincount(
                    group, weights=deviations * deviations, minlength=n_groups
                )
            elif kind == "last":
                # The greatest (ts, partition, offset) of each group: sort, take each group's last.
                order = np.lexsort((offset, partition, ts, group))
                last_of_group = order[np.r_[group[order][1:] != group[order][:-1], True]]
                g = group[last_of_group]
                out[g, index] = ts[last_of_group]
                out[g, index + 1] = partition[last_of_group]
                out[g, index + 2] = offset[last_of_group]
                out[g, index + 3] = values[last_of_group]
            elif kind == "first":
                # The least (ts, partition, offset) of each group: sort, take each group's first.
                order = np.lexsort((offset, partition, ts, group))
                sorted_group = group[order]
                first_of_group = order[np.r_[True, sorted_group[1:] != sorted_group[:-1]]]
                g = group[first_of_group]
                out[g, index] = ts[first_of_group]
                out[g, index + 1] = partition[first_of_group]
                out[g, index + 2] = offset[first_of_group]
                out[g, index + 3] = values[first_of_group]
        return out

    # -- merged window states -> feature values ---------------------------------------------

    def finish(self, windows: F64) -> tuple[F64, F64]:
        """Every feature's value and newest event time from merged window states.

        `windows` is (entities, windows, width), one state per window of `windows` in that
        order; a row of NaN (never written) is an empty window. Returns two (entities,
        features) arrays, NaN where a value is null or a window holds no event. Distinct counts
        are NaN here: they come from the tiles' HyperLogLogs. A fixed number of numpy calls
        whatever the number of features: a read does this on every request.
        """
        if len(windows) == 1:
            return self._finish_one(windows[0])
        plan = self._finish
        empty = np.isnan(windows[:, :, self.COUNT : self.COUNT + 1])
        flat = np.where(empty, self._empty, windows).reshape(len(windows), -1)
        count = flat.take(plan.counts, axis=1)
        values = flat.take(plan.values, axis=1)  # count, sum, max, min, last, var n
        some = count > 0
        if len(plan.mean):
            sums, counts = values[:, plan.mean], count[:, plan.mean]
            values[:, plan.mean] = np.divide(
                sums, counts, out=np.full(sums.shape, np.nan), where=some[:, plan.mean]
            )
        if len(plan.moments):
            n = values[:, plan.moments]
            m2 = flat.take(plan.values[plan.moments] + 2, axis=1)
            two = n >= 2
            variance = np.divide(m2, n - 1, out=np.full(n.shape, np.nan), where=two)
            np.maximum(variance, 0.0, out=variance, where=two)
            variance[:, plan.stddev] = np.sqrt(variance[:, plan.stddev])
            values[:, plan.moments] = variance
        values[~some & plan.nullable] = np.nan
        if len(plan.distinct):
            values[:, plan.distinct] = np.nan
        times = flat.take(plan.newest, axis=1)
        times[~np.isfinite(times)] = np.nan
        return values, times

    def _finish_one(self, windows: F64) -> tuple[F64, F64]:
        """`finish` of one entity's (windows, width) states, in plain Python: most reads are
        one entity, and for its dozen values numpy's cost per call was most of the work
        (~50 µs under load, against ~10). The same rules, step by step; test_tiles.py checks
        that the two give the same bits."""
        flat = windows.ravel().tolist()
        width, empty = self.width, self._empty_list
        for start in range(0, len(flat), width):
            if math.isnan(flat[start + self.COUNT]):  # never written: an empty window
                flat[start : start + width] = empty
        nan, values, times = math.nan, [], []
        for kind, count_at, value_at, newest_at in self._finish.steps:
            count, value = flat[count_at], flat[value_at]
            if kind is _Ending.AS_IS:
                pass
            elif count <= 0 or kind is _Ending.DISTINCT:
                value = nan
            elif kind is _Ending.MEAN:
                value /= count
            elif kind is not _Ending.NULLABLE:  # variance or stddev; `value` is their n
                value = max(flat[value_at + 2] / (value - 1), 0.0) if value >= 2 else nan
                if kind is _Ending.STDDEV:
                    value = math.sqrt(value)
            values.append(value)
            newest = flat[newest_at]
            times.append(newest if math.isfinite(newest) else nan)
        return np.array([values]), np.array([times])


@dataclass(frozen=True)
class _FinishPlan:
    """Per feature of a layout: where `TileLayout.finish` finds its value, and how it ends."""

    # Positions in a read's (windows x width) states, flattened: of the feature's window's
    # count, of the slot its value starts from (for moments: n, then mean and M2), of its
    # window's newest event time.
    counts: npt.NDArray[np.intp]
    values: npt.NDArray[np.intp]
    newest: npt.NDArray[np.intp]
    mean: npt.NDArray[np.intp]  # features divided by the count
    moments: npt.NDArray[np.intp]  # variance and stddev features
    stddev: npt.NDArray[np.intp]  # which of `moments` take the square root
    nullable: npt.NDArray[np.bool_]  # null when the window is empty (all but count and sum)
    distinct: npt.NDArray[np.intp]
    # The same per feature for `_finish_one`: (how it ends, count, value, newest positions).
    steps: tuple[tuple[_Ending, int, int, int], ...]

    @classmethod
    def of(cls, layout: TileLayout) -> _FinishPlan:
        features = layout.features
        windows = layout.windows

        def where(*functions: Function) -> npt.NDArray[np.intp]:
            return np.array(
                [i for i, f in enumerate(features) if f.function in functions], dtype=np.intp
            )

        moments = [f for f in features if f.function in (Function.VARIANCE, Function.STDDEV)]
        start = np.array([windows.index(f.window) for f in features], dtype=np.intp)
        start *= layout.width
        counts = start + layout.COUNT
        values = start + np.array([_value_slot(layout, f) for f in features], dtype=np.intp)
        newest = start + layout.NEWEST
        endings = [
            _Ending.DISTINCT if f.aside else _ENDINGS.get(f.function, _Ending.NULLABLE)
            for f in features
        ]
        return cls(
            counts=counts,
            values=values,
            newest=newest,
            mean=where(Function.MEAN),
            moments=where(Function.VARIANCE, Function.STDDEV),
            stddev=np.array(
                [i for i, f in enumerate(moments) if f.function is Function.STDDEV], dtype=np.intp
            ),
            nullable=np.array(
                [f.function not in (Function.COUNT, Function.SUM) for f in features], dtype=bool
            ),
            # Kept in side structures, filled in by the read (online/values.py).
            distinct=np.array(
                [
                    i
                    for i, f in enumerate(features)
                    if f.aside
                    or f.function in (Function.APPROX_COUNT_DISTINCT, Function.APPROX_PERCENTILE)
                ],
                dtype=np.intp,
            ),
            steps=tuple(
                zip(endings, counts.tolist(), values.tolist(), newest.tolist(), strict=True)
            ),
        )


class _Ending(Enum):
    """How `finish` turns a feature's slot into its value."""

    AS_IS = "as is"  # count and sum: 0 for an empty window
    NULLABLE = "nullable"  # max, min, last: null for an empty window
    MEAN = "mean"
    VARIANCE = "variance"
    STDDEV = "stddev"
    DISTINCT = "distinct"  # from the HyperLogLogs, not the states


_ENDINGS = {
    Function.COUNT: _Ending.AS_IS,
    Function.SUM: _Ending.AS_IS,
    Function.MEAN: _Ending.MEAN,
    Function.VARIANCE: _Ending.VARIANCE,
    Function.STDDEV: _Ending.STDDEV,
    Function.APPROX_COUNT_DISTINCT: _Ending.DISTINCT,
    Function.APPROX_PERCENTILE: _Ending.DISTINCT,
}


def _fold_order(window: TileWindow) -> tuple[bool, int, int, int]:
    return (window.is_lifetime, window.step, window.lag, window.length)


def _value_slot(layout: TileLayout, feature: Feature) -> int:
    """The slot `finish` starts a feature's value from (the count for counts, distinct counts
    and features kept outside the slots)."""
    kind = None if feature.aside else _VALUE_SLOTS.get(feature.function)
    return layout.COUNT if kind is None else layout.slots[f"{kind}:{feature.column}"]


_VALUE_SLOTS = {
    Function.SUM: "sum",
    Function.MEAN: "sum",
    Function.VARIANCE: "moments",
    Function.STDDEV: "moments",
    Function.MAX: "max",
    Function.MIN: "min",
    Function.LAST: "last_v",
    Function.FIRST: "first_v",
}


def _slots_for(function: Function, column: str | None) -> list[str]:
    if function in (
        Function.COUNT,
        Function.APPROX_COUNT_DISTINCT,
        Function.APPROX_PERCENTILE,
        Function.LAST_N,
        Function.TOP_K,
    ):
        return []
    return {
        Function.SUM: [f"sum:{column}"],
        Function.MEAN: [f"sum:{column}"],
        Function.VARIANCE: [f"moments:{column}"],
        Function.STDDEV: [f"moments:{column}"],
        Function.MIN: [f"min:{column}"],
        Function.MAX: [f"max:{column}"],
        Function.LAST: [f"last:{column}"],
        Function.FIRST: [f"first:{column}"],
    }[function]
