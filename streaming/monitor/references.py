"""What the monitor compares with: the reference profile of each model version (or, when
watching a feature view's source topic, of its raw columns), looked up once and cached.

A model version is immutable, so a found profile is kept for the life of the process; a
version that is not found (yet) is asked for again after `RETRY_S`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from featurestore.config import Settings, WatchSettings
from featurestore.definitions import ValueType
from featurestore.drift.compare import check_reference
from featurestore.errors import FeatureStoreError
from featurestore.models.profile import column_profile
from featurestore.models.registry import ModelRegistry
from featurestore.models.versions import Objective
from featurestore.offline.log import OFFSET, PARTITION, TIMESTAMP, OfflineStore, sql_ident
from featurestore.registry import RegisteredView
from streaming.errors import StreamingError

__all__ = [
    "FEATURE",
    "INPUT",
    "SCORE",
    "ModelReferences",
    "Reference",
    "References",
    "Watched",
    "input_reference",
]

log = logging.getLogger("fstore.monitor")

FEATURE, SCORE, INPUT, PERFORMANCE = "feature", "score", "input", "performance"
RETRY_S = 10.0


@dataclass(frozen=True)
class Reference:
    """One model version's (or watched view's) reference columns, in record order."""

    model: str
    version: int
    names: tuple[str, ...]  # the record's columns (features), without the score
    columns: dict[tuple[str, str], dict[str, Any]]  # (kind, column) -> profile column
    objective: Objective | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics
    primary_metric: str | None = None


class References(Protocol):
    """Where a model version's reference comes from (None: it is not monitored)."""

    def get(self, model: str, version: int) -> Reference | None: ...


class Watched:
    """The references of watch mode: one view's source columns."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference

    def get(self, model: str, version: int) -> Reference | None:
        ref = self.reference
        return ref if (model, version) == (ref.model, ref.version) else None


class ModelReferences:
    """Reference profiles of the registered model versions."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._found: dict[tuple[str, int], Reference] = {}
        self._missing: dict[tuple[str, int], float] = {}  # -> when to ask again

    def get(self, model: str, version: int) -> Reference | None:
        key = (model, version)
        found = self._found.get(key)
        if found is not None:
            return found
        if time.monotonic() < self._missing.get(key, 0.0):
            return None
        try:
            found = _model_reference(self.registry, model, version)
        except (FeatureStoreError, ValueError) as exc:
            log.warning("model %s@%s is not monitored: %s", model, version, exc)
            self._missing[key] = time.monotonic() + RETRY_S
            return None
        self._found[key] = found
        return found

    def names(self, model: str, version: int) -> tuple[str, ...] | None:
        found = self.get(model, version)
        return None if found is None else found.names


def _model_reference(registry: ModelRegistry, model: str, version: int) -> Reference:
    meta = registry.get(model, version)
    profile = meta.profile
    features = profile.get("features")
    if not isinstance(features, dict) or not isinstance(profile.get("score"), dict):
        raise ValueError(
            "its registry entry has no reference profile (`features` and `score`); models "
            "trained with `fstore train` have one"
        )
    columns: dict[tuple[str, str], dict[str, Any]] = {}
    for name, column in features.items():
        check_reference(column, f"feature {name!r} of {meta.ref}")
        columns[(FEATURE, name)] = column
    check_reference(profile["score"], f"the score of {meta.ref}")
    columns[(SCORE, SCORE)] = profile["score"]
    return Reference(
        model,
        version,
        tuple(features),
        columns,
        meta.objective,
        dict(meta.metrics),
        meta.primary_metric,
    )


def input_reference(settings: Settings, view: RegisteredView, watch: WatchSettings) -> Reference:
    """The reference of a watched view's source columns: a model's profile of the features the
    columns feed (`watch.model`, `watch.features`), or the newest events of the view's offline
    log (`watch.reference_rows`)."""
    source = view.view.source
    numeric = [
        name
        for name, kind in source.schema_.items()
        if kind in (ValueType.FLOAT64, ValueType.INT64) and name != source.timestamp_field
    ]
    columns = watch.columns or numeric
    unknown = sorted(set(columns) - set(numeric))
    if unknown:
        raise StreamingError(
            f"watch of view {view.name!r}: {unknown} are not numeric columns of source "
            f"{source.name!r} (numeric: {numeric})"
        )
    model = f"view:{view.name}"
    profiles: dict[tuple[str, str], dict[str, Any]] = {}
    if watch.model is not None:
        name, _, version = watch.model.partition("@")
        meta = ModelRegistry(settings.models).get(name, version or None)
        for column in columns:
            feature = watch.features.get(column)
            found = meta.profile.get("features", {}).get(feature) if feature else None
            if found is None:
                raise StreamingError(
                    f"watch of view {view.name!r}: map column {column!r} to a feature of "
                    f"{meta.ref} in `features` (its features: "
                    f"{sorted(meta.profile.get('features', {}))})"
                )
            check_reference(found, f"feature {feature!r} of {meta.ref}")
            profiles[(INPUT, column)] = found
    else:
        events = _newest_events(settings, view, columns, watch.reference_rows)
        for column in columns:
            values = events.column(column).cast(pa.float64()).fill_null(np.nan).to_numpy()
            profiles[(INPUT, column)] = column_profile(values)
    return Reference(model, view.version, tuple(columns), profiles)


def _newest_events(
    settings: Settings, view: RegisteredView, columns: list[str], rows: int
) -> pa.Table:
    """The `rows` newest events of the view's offline log (by time, then partition and offset),
    oldest first: DuckDB keeps only those while it reads the log."""
    newest = f"{TIMESTAMP} DESC, {PARTITION} DESC, {OFFSET} DESC"
    selected = ", ".join(sql_ident(c) for c in columns) or "1 AS __row"
    events = OfflineStore(settings.offline).read_sql(
        view.name,
        view.version,
        f"SELECT {selected} FROM ("  # noqa: S608
        f"SELECT * FROM events ORDER BY {newest} LIMIT {int(rows)}) "
        f"ORDER BY {TIMESTAMP}, {PARTITION}, {OFFSET}",
    )
    if events is None or events.num_rows == 0:
        raise StreamingError(
            f"watch of view {view.name!r}: its offline log is empty, so there is no reference; "
            "ingest or import history first, or name a model in `watch.model`"
        )
    return events
