"""Scoring a batch of entity rows: route rows to aliases, read their features from Redis in one
round trip, build one float64 matrix per model version, and call `Booster.predict` once each
(a single row goes through LightGBM's single-row fast path instead, single_row.py).

A feature Redis does not have (no event in its window) is NaN in the matrix — LightGBM's
missing value, as in training — and reported per row. Request-time values given by model
feature name replace what Redis would give; a view whose every feature is given is not read.

A row whose every feature is missing — no event in any window of the views it reads, and no
request feature — is not answered a score unless the request asks for one (`score_missing`):
a model scores such a row as readily as any other (its counts and sums read 0), but the score
says nothing of the entity, and an empty or wiped Redis would make every answer one of those,
served as fine. Its answer says it is unscored and why (`UNSCORED_REASON`), and the prediction
log, which records served scores, leaves it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from featurestore.definitions import ValueType
from featurestore.keys import entity_keys
from featurestore.on_demand import evaluate
from featurestore.online import OnlineStore, ViewRead, ViewValues, read_views, read_views_async
from featurestore.prediction_records import LogGroup
from serving.errors import BadRequest, NotFound, Unavailable
from serving.inputs import PredictInput
from serving.model_cache import FeatureRead, LoadedModel, LoadedVersion, OnDemandStep

__all__ = [
    "UNSCORED_REASON",
    "Group",
    "missing_names",
    "plan_groups",
    "score_groups",
    "score_groups_async",
]

UNSCORED_REASON = "every feature is missing (no event in any window, no request feature)"

F64 = npt.NDArray[np.float64]
Rows = npt.NDArray[np.intp]
Mask = npt.NDArray[np.bool_]

# One thread per predict: on a small batch OpenMP's start-up costs more than it saves (measured
# 37 us vs 57 us for 1 row, 165 us vs 460 us for 100), and requests run side by side anyway.
_PREDICT_THREADS = 1


@dataclass
class Group:
    """The rows one alias (one model version) scores in a request."""

    alias: str
    version: LoadedVersion
    rows: Rows  # positions in the request
    matrix: F64 | None = None  # rows x model features, filled by `score_groups`
    scores: F64 | None = None
    missing: npt.NDArray[np.bool_] | None = None  # where `matrix` is NaN, by `score_groups`
    any_missing: bool = False  # whether `missing` holds any
    # Rows with nothing to be scored on: no event in any window of the views read, and no
    # request feature (a count or sum of nothing reads 0, so this is not `missing.all(1)`).
    empty: npt.NDArray[np.bool_] | None = None
    # Rows answered without a score (empty, and the request did not ask to score them); None:
    # every row has its score.
    unscored: npt.NDArray[np.bool_] | None = None

    @property
    def scored_rows(self) -> int:
        return len(self.rows) - (0 if self.unscored is None else int(self.unscored.sum()))

    def logged(self) -> LogGroup | None:
        """The rows answered a score, as the prediction log records them (None: none was)."""
        assert self.matrix is not None and self.scores is not None  # noqa: S101 - scored
        version = self.version
        rows, matrix, scores = self.rows, self.matrix, self.scores
        if self.unscored is not None:
            kept = ~self.unscored
            if not kept.any():
                return None
            rows, matrix, scores = rows[kept], matrix[kept], scores[kept]
        return LogGroup(version.version, self.alias, version.names, rows, matrix, scores)


def plan_groups(model: LoadedModel, request: PredictInput, alias: str | None) -> list[Group]:
    """Which alias scores which rows: the one asked for, or the sticky traffic split."""
    everything = np.arange(request.rows, dtype=np.intp)
    if alias is not None:
        groups = [Group(alias, model.for_alias(alias), everything)]
    else:
        split = model.split
        if split is None:
            raise NotFound(
                f"model {model.name!r} has no alias taking traffic; point its production alias "
                f"at a version (PUT /v1/models/{model.name}/aliases/production)"
            )
        if len(split.aliases) == 1:
            groups = [Group(split.aliases[0], model.versions[split.versions[0]], everything)]
        else:
            _require_keys(model.name, model.route_keys, request)
            keys = entity_keys(request.entities, model.route_keys)
            chosen = split.assign(keys)
            groups = [
                Group(name, model.versions[version], np.flatnonzero(chosen == i))
                for i, (name, version) in enumerate(zip(split.aliases, split.versions, strict=True))
            ]
            groups = [g for g in groups if len(g.rows)]
    unknown = (
        sorted(set(request.request_features) - model.feature_names)
        if request.request_features
        else []
    )
    if unknown:
        raise BadRequest(
            f"model {model.name!r} has no features {unknown} (its features: "
            f"{', '.join(sorted(model.feature_names))}); request_features are keyed by model "
            "feature name"
        )
    for group in groups:
        _require_keys(model.name, group.version.entity_keys, request)
    return groups


def score_groups(
    online: OnlineStore, groups: Sequence[Group], request: PredictInput, as_of_us: int
) -> None:
    """Fill each group's feature matrix (one Redis round trip for all) and scores."""
    reads = _FeatureReads(groups, request)
    reads.fill(read_views(online, reads.views, as_of_us) if reads.views else [])
    _score(groups, request.score_missing)


async def score_groups_async(
    online: OnlineStore, groups: Sequence[Group], request: PredictInput, as_of_us: int
) -> None:
    """`score_groups` on the event loop: it serves other requests while Redis answers."""
    reads = _FeatureReads(groups, request)
    reads.fill(await read_views_async(online, reads.views, as_of_us) if reads.views else [])
    _score(groups, request.score_missing)


def _score(groups: Sequence[Group], score_missing: bool) -> None:
    for group in groups:
        assert group.matrix is not None  # noqa: S101 - filled just before
        group.missing = missing = np.isnan(group.matrix)
        group.any_missing = bool(missing.any())
        if not score_missing and group.empty is not None and group.empty.any():
            group.unscored = group.empty
        version = group.version
        if len(group.matrix) == 1 and version.single_row is not None:
            group.scores = np.array([version.single_row(group.matrix[0])])
        else:
            scores = version.booster.predict(group.matrix, num_threads=_PREDICT_THREADS)
            group.scores = np.asarray(scores, dtype=np.float64)


class _FeatureReads:
    """The (view, version) reads a request's groups need, each for the rows that need it, and
    how their values fill each group's matrix."""

    def __init__(self, groups: Sequence[Group], request: PredictInput) -> None:
        self.groups = groups
        self.request = request
        given = request.request_features
        needed: dict[tuple[str, int], tuple[list[Rows], FeatureRead]] = {}
        for group in groups:
            names = group.version.names
            for read in group.version.reads:
                if not read.on_demand_input and all(
                    names[column] in given for column, _ in read.columns
                ):
                    continue
                entry = needed.setdefault((read.view, read.version), ([], read))
                entry[0].append(group.rows)
        self.everything = len(groups) == 1 and len(groups[0].rows) == request.rows
        keys_by_join: dict[tuple[str, ...], list[str]] = {}
        self.views: list[ViewRead] = []
        # Per read, where each request row is among the entities read (None: all, in order).
        self.positions: dict[tuple[str, int], Rows | None] = {}
        for key, (row_sets, read) in needed.items():
            layout, join_keys = read.layout, read.join_keys
            if join_keys not in keys_by_join:
                keys_by_join[join_keys] = entity_keys(request.entities, join_keys)
            all_keys = keys_by_join[join_keys]
            if self.everything:
                self.views.append((key[0], key[1], layout, all_keys))
                self.positions[key] = None
            else:
                rows = np.unique(np.concatenate(row_sets))
                where = np.full(request.rows, -1, dtype=np.intp)
                where[rows] = np.arange(len(rows), dtype=np.intp)
                self.views.append((key[0], key[1], layout, [all_keys[i] for i in rows]))
                self.positions[key] = where

    def fill(self, view_values: Sequence[ViewValues]) -> None:
        """Each group's matrix from what was read for `views`, in their order, and which of its
        rows have nothing to be scored on (`Group.empty`)."""
        results = dict(zip(self.positions, view_values, strict=True))
        rebuilding = sorted(
            f"{view} v{version}" for (view, version), values in results.items() if values.rebuilding
        )
        if rebuilding:
            # Its values may be short of the truth until the rebuild ends: never scored as ok.
            raise Unavailable(
                f"the online state of {', '.join(rebuilding)} is being rebuilt from the offline "
                "log after Redis lost it; retry shortly"
            )
        given = self.request.request_features
        if any(group.version.on_demand for group in self.groups):
            for read_values in results.values():
                # On-demand functions read columns of these: read-only, they need no copy.
                read_values.values.setflags(write=False)
        # Per read, the entities without an event in any window of the view. A count or a sum
        # of such a window reads 0, not NaN: only the event times tell "nothing" from "0".
        no_event = {
            key: cast(Mask, np.isnan(values.event_times).all(axis=1))
            for key, values in results.items()
        }
        for group in self.groups:
            version = group.version
            matrix = np.full((len(group.rows), len(version.names)), np.nan)
            empty: Mask | None = None
            for read in version.reads:
                key = (read.view, read.version)
                if key not in results:
                    continue
                # (entities, view features); NaN where a window holds no value: LightGBM's
                # missing.
                block, nothing = results[key].values, no_event[key]
                position = self.positions[key]
                if position is not None:
                    block, nothing = block[position[group.rows]], nothing[position[group.rows]]
                matrix[:, read.targets] = block[:, read.sources]
                empty = nothing if empty is None else empty & nothing
            converted: dict[tuple[str, ValueType], npt.NDArray[Any]] = {}
            # Every row has a view value already (the usual case): no output changes `empty`.
            settled = empty is not None and not empty.any() if version.on_demand else True
            for step in version.on_demand:
                outputs = self._on_demand(step, group, results, converted)
                for target, output in step.outputs:
                    matrix[:, target] = outputs[output]
                    if not settled:
                        nothing = np.isnan(outputs[output])
                        empty = nothing if empty is None else empty & nothing
            # Request-time values go over what Redis gave (a view read only for other columns).
            for name, values in given.items():
                if name in version.index:
                    column = values if self.everything else values[group.rows]
                    matrix[:, version.index[name]] = column
                    empty = np.isnan(column) if empty is None else empty & np.isnan(column)
            group.matrix = matrix
            group.empty = np.ones(len(group.rows), dtype=bool) if empty is None else empty

    def _on_demand(
        self,
        step: OnDemandStep,
        group: Group,
        results: dict[tuple[str, int], ViewValues],
        converted: dict[tuple[str, ValueType], npt.NDArray[Any]],
    ) -> dict[str, F64]:
        """An on-demand feature's outputs for the group's rows: its function over the request
        fields and the view values read (featurestore/on_demand.py, as training computed it)."""
        request = self.request.request
        if self.everything:  # one group of every row, the usual case: columns as read
            view_values = {ref: results[key].values[:, at] for ref, key, at in step.inputs}
            return evaluate(step.feature, request, view_values, self.request.rows, converted)
        picked = group.rows.tolist()
        request = {name: [values[i] for i in picked] for name, values in request.items()}
        view_values = {}
        for ref, key, position in step.inputs:
            column = results[key].values[:, position]
            where = self.positions[key]
            view_values[ref] = column if where is None else column[where[group.rows]]
        return evaluate(step.feature, request, view_values, len(group.rows), converted)


def missing_names(group: Group) -> list[list[str]]:
    """Per row of the group, the features that were missing (NaN) when it was scored."""
    mask = group.missing
    assert mask is not None  # noqa: S101 - called after scoring
    if not group.any_missing:
        return [[] for _ in range(len(group.rows))]
    names = group.version.names
    return [[names[j] for j in np.flatnonzero(row)] if row.any() else [] for row in mask]


def _require_keys(model: str, keys: Sequence[str], request: PredictInput) -> None:
    absent = [k for k in keys if k not in request.entities]
    if absent:
        raise BadRequest(
            f"model {model!r} needs entity keys {list(keys)}; the request lacks {absent} "
            f"(given: {sorted(request.entities)})"
        )
