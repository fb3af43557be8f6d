"""Tile states: how a view's events are summarised per tile, merged, and turned into features.

A tile state is a fixed-length vector of float64 slots, laid out per view by `TileLayout`. Each
slot has a merge rule: add (counts, sums, sums of squares), max, min, or part of a `last` group
(event time, partition, offset, value — the lexicographically greatest key wins). The worker
reduces a batch of events to one state per (entity, tile) with numpy, Redis merges those into
stored states with the same rules (see `online.py`), and reads fold the tiles of a window into
feature values. float64 holds microsecond timestamps exactly (< 2**53).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from featurestore.definitions import FeatureView, Function, duration_us

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Merge(StrEnum):
    ADD = "a"
    MAX = "x"
    MIN = "n"
    LAST = "L"  # first slot of a 4-slot group: (event time, partition, offset, value)
    LAST_PART = "l"  # the other three slots of that group


@dataclass(frozen=True)
class Feature:
    name: str
    function: Function
    column: str | None
    window_tiles: int


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
        for agg in view.aggregations:
            if agg.function is Function.APPROX_COUNT_DISTINCT:
                assert agg.column is not None  # noqa: S101 - validated by Aggregation
                if agg.column not in self.distinct_columns:
                    self.distinct_columns.append(agg.column)
            for slot in _slots_for(agg.function, agg.column):
                self._add_slot(slot)
            for window, name in zip(agg.windows, agg.feature_names(), strict=True):
                tiles = duration_us(window) // self.tile_us
                self.features.append(Feature(name, agg.function, agg.column, tiles))

    def _add_slot(self, slot: str) -> None:
        if slot in self.slots:
            return
        kind, _, _column = slot.partition(":")
        if kind == "last_ts":
            for part in ("last_ts", "last_p", "last_o", "last_v"):
                self.slots[f"{part}:{_column}"] = len(self.merges)
                self.merges.append(Merge.LAST if part == "last_ts" else Merge.LAST_PART)
            return
        self.slots[slot] = len(self.merges)
        self.merges.append(
            {"sum": Merge.ADD, "sq": Merge.ADD, "max": Merge.MAX}.get(kind, Merge.MIN)
        )

    @property
    def width(self) -> int:
        return len(self.merges)

    def merge_codes(self) -> str:
        return "".join(m.value for m in self.merges)

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
        out = np.zeros((n_groups, self.width), dtype=np.float64)
        out[:, self.COUNT] = np.bincount(group, minlength=n_groups)
        newest = np.full(n_groups, -np.inf)
        np.maximum.at(newest, group, ts.astype(np.float64))
        out[:, self.NEWEST] = newest
        for slot, index in self.slots.items():
            kind, _, column = slot.partition(":")
            if not column:
                continue
            values = columns[column]
            if kind == "sum":
                out[:, index] = np.bincount(group, weights=values, minlength=n_groups)
            elif kind == "sq":
                out[:, index] = np.bincount(group, weights=values * values, minlength=n_groups)
            elif kind in ("max", "min"):
                fill, ufunc = (-np.inf, np.maximum) if kind == "max" else (np.inf, np.minimum)
                acc = np.full(n_groups, fill)
                ufunc.at(acc, group, values)
                out[:, index] = acc
            elif kind == "last_ts":
                # The greatest (ts, partition, offset) of each group: sort, take each group's last.
                order = np.lexsort((offset, partition, ts, group))
                last_of_group = order[np.r_[group[order][1:] != group[order][:-1], True]]
                g = group[last_of_group]
                out[g, index] = ts[last_of_group]
                out[g, index + 1] = partition[last_of_group]
                out[g, index + 2] = offset[last_of_group]
                out[g, index + 3] = values[last_of_group]
        return out

    # -- tile states -> feature values -----------------------------------------------------

    def merge(self, states: F64) -> F64:
        """Fold states (rows) into one with the slots' merge rules. Empty rows are all-NaN."""
        present = states[~np.isnan(states[:, self.COUNT])]
        out = np.full(self.width, np.nan)
        if len(present) == 0:
            out[self.COUNT] = 0.0
            return out
        for index, rule in enumerate(self.merges):
            column = present[:, index]
            if rule is Merge.ADD:
                out[index] = column.sum()
            elif rule is Merge.MAX:
                out[index] = column.max()
            elif rule is Merge.MIN:
                out[index] = column.min()
            elif rule is Merge.LAST:
                best = np.lexsort((present[:, index + 2], present[:, index + 1], column))[-1]
                out[index : index + 4] = present[best, index : index + 4]
        return out

    def features_at(self, tile_of_t: int, tiles: I64, states: F64) -> dict[str, float | None]:
        """Feature values at a read time in tile `tile_of_t`, from the states of `tiles`."""
        values: dict[str, float | None] = {}
        for feature in self.features:
            if feature.function is Function.APPROX_COUNT_DISTINCT:
                continue  # read from HyperLogLogs, see online.read_features
            in_window = (tiles > tile_of_t - feature.window_tiles) & (tiles <= tile_of_t)
            merged = self.merge(states[in_window])
            values[feature.name] = self.finalize(feature, merged)
        return values

    def newest_at(self, tile_of_t: int, window_tiles: int, tiles: I64, states: F64) -> float:
        in_window = (tiles > tile_of_t - window_tiles) & (tiles <= tile_of_t)
        newest = states[in_window, self.NEWEST]
        newest = newest[~np.isnan(newest)]
        return float(newest.max()) if len(newest) else float("nan")

    def finalize(self, feature: Feature, merged: F64) -> float | None:
        count = merged[self.COUNT]
        fn, column = feature.function, feature.column
        if fn is Function.COUNT:
            return float(count)
        if fn is Function.SUM:
            return float(merged[self.slots[f"sum:{column}"]]) if count else 0.0
        if count == 0:
            return None
        if fn is Function.MEAN:
            return float(merged[self.slots[f"sum:{column}"]] / count)
        if fn in (Function.VARIANCE, Function.STDDEV):
            if count < 2:
                return None
            total, squares = merged[self.slots[f"sum:{column}"]], merged[self.slots[f"sq:{column}"]]
            variance = max((squares - total * total / count) / (count - 1), 0.0)
            return float(variance if fn is Function.VARIANCE else np.sqrt(variance))
        if fn is Function.MAX:
            return float(merged[self.slots[f"max:{column}"]])
        if fn is Function.MIN:
            return float(merged[self.slots[f"min:{column}"]])
        if fn is Function.LAST:
            return float(merged[self.slots[f"last_v:{column}"]])
        if fn is Function.APPROX_COUNT_DISTINCT:
            raise ValueError("distinct counts come from the tiles' HyperLogLogs, not the states")
        raise NotImplementedError(fn)


def _slots_for(function: Function, column: str | None) -> list[str]:
    if function in (Function.COUNT, Function.APPROX_COUNT_DISTINCT):
        return []
    return {
        Function.SUM: [f"sum:{column}"],
        Function.MEAN: [f"sum:{column}"],
        Function.VARIANCE: [f"sum:{column}", f"sq:{column}"],
        Function.STDDEV: [f"sum:{column}", f"sq:{column}"],
        Function.MIN: [f"min:{column}"],
        Function.MAX: [f"max:{column}"],
        Function.LAST: [f"last_ts:{column}"],
    }[function]


def tile_of(ts_us: int | I64, tile_us: int) -> int | I64:
    """The tile an event time falls in; a time exactly on a boundary starts the next tile."""
    return ts_us // tile_us
