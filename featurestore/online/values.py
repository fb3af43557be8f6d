"""Feature values read from the online store: per view as arrays (`ViewValues`, the serving
path), or per entity as `FeatureValue` objects.

A value's status is `ok`, `stale` (its newest event is older than the view's ttl), `missing`
(no event in the window) or `rebuilding`: Redis lost the view version's state and it is being
rebuilt from the offline log (featurestore/writer.py), so whatever is there now — a value, or
none — may be short of the truth. Unknown is never reported as `ok`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from featurestore.definitions import Function, ValueType
from featurestore.frequencies import top_values
from featurestore.frequencies import value_counts as value_counts_name
from featurestore.online.base import StateRead, TileStore
from featurestore.online.layout import shard_of, sketch_name
from featurestore.online.plan import read_plan
from featurestore.percentiles import quantile
from featurestore.tiles import F64, TileLayout
from featurestore.windows import TileWindow

__all__ = [
    "FeatureValue",
    "ViewRead",
    "ViewValues",
    "read_features",
    "read_views",
    "read_views_async",
]


@dataclass(frozen=True)
class FeatureValue:
    # a string for `first` / `last` of a string column, a list (newest first) for `last_n`
    value: float | str | list[float] | list[str] | None
    # ok | stale (older than the view's ttl) | missing (no event in the window) | rebuilding
    # (the view's state is being rebuilt from the offline log: not to be trusted yet)
    status: str
    event_time_us: int | None  # newest event in the window


@dataclass(frozen=True)
class ViewValues:
    """One view's features for many entities, as arrays (entities, features)."""

    features: list[str]
    values: F64  # NaN where the value is null
    event_times: F64  # newest event in the window, µs; NaN when the window holds none
    stale: npt.NDArray[np.bool_]  # the newest event is older than the view's ttl
    rebuilding: bool = False  # the view's state is being rebuilt: no value of it is sure
    # Features whose values are not floats (`first` / `last` of a string column: strings;
    # `last_n`: lists): feature index -> per entity its value or None; `values` holds NaN there.
    typed: dict[int, list[Any]] = field(default_factory=dict)

    def column(self, f: int) -> list[Any]:
        """One feature's values for every entity, None where null, whatever its type."""
        if f in self.typed:
            return list(self.typed[f])
        return [None if math.isnan(v) else v for v in self.values[:, f].tolist()]

    def statuses(self) -> list[list[str]]:
        """ok / stale / missing / rebuilding, per entity and feature, as `FeatureValue.status`
        says."""
        if self.rebuilding:
            return [["rebuilding"] * len(self.features) for _ in range(len(self.values))]
        # From the event times, not the values: a count or sum of an empty window reads 0,
        # and an entity Redis knows nothing of (a wiped state) must not read `ok`.
        codes = np.where(np.isnan(self.event_times), 2, np.where(self.stale, 1, 0))
        names = np.array(["ok", "stale", "missing"])
        listed: list[list[str]] = names[codes].tolist()
        return listed


ViewRead = tuple[str, int, TileLayout, Sequence[str]]  # view, version, layout, entity keys


def read_views(store: TileStore, reads: Sequence[ViewRead], as_of_us: int) -> list[ViewValues]:
    """Feature values of each (view, version, layout, entity keys) at `as_of_us`, one round trip.

    Every entity of a read shares one plan: the (bucket, field) states covering each window.
    Redis folds them (the fold script, with the merge rules of `TileLayout.merge`) and sends one
    state per entity and window; here `TileLayout.finish` turns them into values. The same
    round trip asks whether each view's state is being rebuilt (`ViewValues.rebuilding`).
    """
    state_reads, distinct, prefixes = _state_reads(store, reads, as_of_us)
    states, counts, rebuilding = store.read(state_reads, distinct, prefixes)
    windows = _sketch_reads(store, reads, as_of_us)
    sketches = store.read_sketches(windows) if windows else []
    pick_windows = _pick_reads(store, reads, as_of_us)
    picks = store.read_picks(pick_windows) if pick_windows else []
    newest_windows = _newest_reads(store, reads, as_of_us)
    newest = store.read_newest(newest_windows) if newest_windows else []
    count_windows = _count_reads(store, reads, as_of_us)
    value_counts = store.read_counts(count_windows) if count_windows else []
    return _view_values(
        reads, states, counts, rebuilding, as_of_us, sketches, picks, newest, value_counts
    )


async def read_views_async(
    store: TileStore, reads: Sequence[ViewRead], as_of_us: int
) -> list[ViewValues]:
    """`read_views` on the running event loop (`OnlineStore.read_async`)."""
    state_reads, distinct, prefixes = _state_reads(store, reads, as_of_us)
    states, counts, rebuilding = await store.read_async(state_reads, distinct, prefixes)
    windows = _sketch_reads(store, reads, as_of_us)
    sketches = await store.read_sketches_async(windows) if windows else []
    pick_windows = _pick_reads(store, reads, as_of_us)
    picks = await store.read_picks_async(pick_windows) if pick_windows else []
    newest_windows = _newest_reads(store, reads, as_of_us)
    newest = await store.read_newest_async(newest_windows) if newest_windows else []
    count_windows = _count_reads(store, reads, as_of_us)
    value_counts = await store.read_counts_async(count_windows) if count_windows else []
    return _view_values(
        reads, states, counts, rebuilding, as_of_us, sketches, picks, newest, value_counts
    )


def _count_reads(store: TileStore, reads: Sequence[ViewRead], as_of_us: int) -> list[list[str]]:
    """Per view, entity and `top_k` feature, its window's value-count hashes."""
    out: list[list[str]] = []
    for view, version, layout, entities in reads:
        tops = [x for x in layout.features if x.function is Function.TOP_K]
        if not tops:
            continue
        windows = read_plan(as_of_us // layout.tile_us, layout).windows
        for entity in entities:
            prefix = store.entity_prefix(view, version, entity)
            for x in tops:
                name = value_counts_name(x.column or "")
                out.append(
                    [f"{prefix}:{bucket}:q:{name}:{field}" for bucket, field in windows[x.window]]
                )
    return out


def _newest_reads(
    store: TileStore, reads: Sequence[ViewRead], as_of_us: int
) -> list[tuple[int, list[str]]]:
    """Per view, entity and `last_n` feature: its n and the keys of its window's tiles."""
    out: list[tuple[int, list[str]]] = []
    for view, version, layout, entities in reads:
        lists = [f for f, x in enumerate(layout.features) if x.function is Function.LAST_N]
        if not lists:
            continue
        windows = read_plan(as_of_us // layout.tile_us, layout).windows
        for entity in entities:
            prefix = store.entity_prefix(view, version, entity)
            for f in lists:
                x = layout.features[f]
                out.append(
                    (
                        x.n or 0,
                        [
                            f"{prefix}:{bucket}:n:{x.column}:{x.n}:{field}"
                            for bucket, field in windows[x.window]
                        ],
                    )
                )
    return out


def _picked(layout: TileLayout) -> list[int]:
    """The features of a layout kept outside the float slots (string `first` / `last`)."""
    return [
        f
        for f, x in enumerate(layout.features)
        if x.value_type is ValueType.STRING and x.function in (Function.FIRST, Function.LAST)
    ]


def _pick_reads(
    store: TileStore, reads: Sequence[ViewRead], as_of_us: int
) -> list[tuple[str, list[str]]]:
    """Per view, entity and string `first` / `last` feature: its function and the keys of its
    window's tiles."""
    out: list[tuple[str, list[str]]] = []
    for view, version, layout, entities in reads:
        picked = _picked(layout)
        if not picked:
            continue
        windows = read_plan(as_of_us // layout.tile_us, layout).windows
        for entity in entities:
            prefix = store.entity_prefix(view, version, entity)
            for f in picked:
                x = layout.features[f]
                out.append(
                    (
                        x.function.value,
                        [
                            f"{prefix}:{bucket}:s:{x.column}:{x.function.value}:{field}"
                            for bucket, field in windows[x.window]
                        ],
                    )
                )
    return out


def _sketched(layout: TileLayout) -> list[tuple[str, float, TileWindow]]:
    """The (column, accuracy, window) percentile sketches a layout's features read."""
    out: list[tuple[str, float, TileWindow]] = []
    for f in layout.features:
        if f.function is Function.APPROX_PERCENTILE:
            sketch = (f.column or "", f.accuracy or 0.0, f.window)
            if sketch not in out:
                out.append(sketch)
    return out


def _sketch_reads(store: TileStore, reads: Sequence[ViewRead], as_of_us: int) -> list[list[str]]:
    """Per view, entity and percentile sketch window, the tiles' sketch keys it sums (all the
    entity's: one slot)."""
    out: list[list[str]] = []
    for view, version, layout, entities in reads:
        sketched = _sketched(layout)
        if not sketched:
            continue
        windows = read_plan(as_of_us // layout.tile_us, layout).windows
        for entity in entities:
            prefix = store.entity_prefix(view, version, entity)
            for column, accuracy, window in sketched:
                out.append(
                    [
                        f"{prefix}:{bucket}:q:{sketch_name(column, accuracy)}:{field}"
                        for bucket, field in windows[window]
                    ]
                )
    return out


def _state_reads(
    store: TileStore, reads: Sequence[ViewRead], as_of_us: int
) -> tuple[list[StateRead], list[list[str]], list[list[str]]]:
    """What `OnlineStore.read` is asked for: per view, its entities' cache keys with the plan
    they share; per entity and distinct-count feature, the HyperLogLogs of its window; and per
    view the rebuild markers of the shards its entities live in."""
    state_reads: list[StateRead] = []
    distinct: list[list[str]] = []
    markers: list[list[str]] = []
    for view, version, layout, entities in reads:
        plan = read_plan(as_of_us // layout.tile_us, layout)
        prefixes = [store.entity_prefix(view, version, entity) for entity in entities]
        shards = sorted({shard_of(entity, store.shards) for entity in entities}) or [0]
        markers.append([store.rebuild_key(view, version, shard) for shard in shards])
        state_reads.append(([f"{prefix}:c" for prefix in prefixes], plan, layout))
        windows = plan.windows
        for prefix in prefixes:
            for feature in layout.features:
                if feature.function is Function.APPROX_COUNT_DISTINCT:
                    distinct.append(
                        [
                            f"{prefix}:{bucket}:h:{feature.column}:{field}"
                            for bucket, field in windows[feature.window]
                        ]
                    )
    return state_reads, distinct, markers


def _view_values(
    reads: Sequence[ViewRead],
    states: list[F64],
    distinct_counts: list[int],
    rebuilding: list[bool],
    as_of_us: int,
    sketch_counts: Sequence[dict[int, int]] = (),
    picked_values: Sequence[str | None] = (),
    newest_values: Sequence[list[str]] = (),
    counted_values: Sequence[dict[str, int]] = (),
) -> list[ViewValues]:
    counts = iter(distinct_counts)
    sketches = iter(sketch_counts)
    picks = iter(picked_values)
    newest = iter(newest_values)
    tallies = iter(counted_values)
    results = []
    for (_view, _version, layout, entities), flat, unsure in zip(
        reads, states, rebuilding, strict=True
    ):
        values, times = layout.finish(flat)
        distinct = [
            f for f, x in enumerate(layout.features) if x.function is Function.APPROX_COUNT_DISTINCT
        ]
        for e in range(len(entities)):
            for f in distinct:
                values[e, f] = next(counts)
        sketched = _sketched(layout)
        if sketched:
            for e in range(len(entities)):
                merged = {sketch: next(sketches) for sketch in sketched}
                for f, x in enumerate(layout.features):
                    if x.function is Function.APPROX_PERCENTILE:
                        counted = merged[(x.column or "", x.accuracy or 0.0, x.window)]
                        values[e, f] = quantile(
                            np.fromiter(counted.keys(), np.int64, len(counted)),
                            np.fromiter(counted.values(), np.int64, len(counted)),
                            x.quantile or 0.0,
                            x.accuracy or 0.0,
                        )
        ttl = layout.view.ttl_us
        with np.errstate(invalid="ignore"):
            stale = (
                np.zeros(values.shape, dtype=bool) if ttl is None else times < as_of_us - ttl
            )  # NaN (no event) compares False: not stale
        typed: dict[int, list[Any]] = {f: [] for f in _picked(layout)}
        lists = [
            (f, x.value_type)
            for f, x in enumerate(layout.features)
            if x.function is Function.LAST_N
        ]
        for f, _kind in lists:
            typed[f] = []
        tops = [
            (f, x.n or 0) for f, x in enumerate(layout.features) if x.function is Function.TOP_K
        ]
        for f, _k in tops:
            typed[f] = []
        for _entity in entities:
            for f, k in tops:
                typed[f].append(top_values(next(tallies), k))
            for f in _picked(layout):
                typed[f].append(next(picks))
            for f, kind in lists:
                texts = next(newest)
                typed[f].append(
                    (texts if kind is ValueType.STRING else [float(t) for t in texts])
                    if texts
                    else None
                )
        names = [feature.name for feature in layout.features]
        results.append(ViewValues(names, values, times, stale, unsure, typed))
    return results


def read_features(
    store: TileStore, reads: Sequence[ViewRead], as_of_us: int
) -> list[list[dict[str, FeatureValue]]]:
    """`read_views` as per-entity dicts of `FeatureValue`, for callers that want objects."""
    results = []
    for view_values in read_views(store, reads, as_of_us):
        statuses = view_values.statuses()
        per_entity = []
        typed = view_values.typed
        for e, row in enumerate(view_values.values.tolist()):
            times = view_values.event_times[e].tolist()
            per_entity.append(
                {
                    name: FeatureValue(
                        typed[f][e] if f in typed else None if math.isnan(value) else value,
                        statuses[e][f],
                        None if math.isnan(times[f]) else int(times[f]),
                    )
                    for f, (name, value) in enumerate(zip(view_values.features, row, strict=True))
                }
            )
        results.append(per_entity)
    return results
