"""`FeatureStore`: the library entry point for reading features.

>>> store = FeatureStore()  # doctest: +SKIP
>>> store.get_online_features(features=["user_txn:amount_sum_10m"],
...                           entities={"user_id": ["u1", "u2"]}).to_dict()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.config import Settings, load_settings
from featurestore.errors import RequestError
from featurestore.keys import entity_keys
from featurestore.models.registry import ModelRegistry, ModelVersion, Objective
from featurestore.models.train import train_model
from featurestore.offline.datasets import Dataset, DatasetStore
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.offline.on_demand import historical_with_on_demand
from featurestore.on_demand import evaluate
from featurestore.online import OnlineStore, read_views
from featurestore.registry import RegisteredView, Registry
from featurestore.tiles import TileLayout
from featurestore.timestamps import from_us, to_us

F64 = npt.NDArray[np.float64]

__all__ = [
    "FeatureColumn",
    "FeatureStore",
    "OnlineResponse",
]


@dataclass(frozen=True)
class FeatureColumn:
    values: list[float | None] | list[float | str | None]  # strings: first/last of a string
    statuses: list[str]
    event_timestamps: list[datetime | None]


@dataclass(frozen=True)
class OnlineResponse:
    entities: dict[str, list[Any]]
    features: dict[str, FeatureColumn] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entities": self.entities,
            "features": {
                ref: {
                    "values": column.values,
                    "statuses": column.statuses,
                    "event_timestamps": [
                        None if ts is None else ts.isoformat() for ts in column.event_timestamps
                    ],
                }
                for ref, column in self.features.items()
            },
        }


class FeatureStore:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.registry = Registry(self.settings.registry)
        self.online = OnlineStore(self.settings.redis)
        self.datasets = DatasetStore(OfflineStore(self.settings.offline))
        self._layouts: dict[tuple[str, int], TileLayout] = {}

    def get_online_features(
        self,
        entities: Mapping[str, Sequence[Any]],
        features: Sequence[str] | None = None,
        service: str | None = None,
        as_of: datetime | None = None,
        request: Mapping[str, Sequence[Any]] | None = None,
    ) -> OnlineResponse:
        """Feature values for each entity row at `as_of` (default: now), in one Redis round trip.

        `features` are refs `view:feature` (or `view@version:feature`); `service` names a
        FeatureService instead. Each value comes with a status (ok, stale, missing) and the event
        time of the newest event it covers. Refs to on-demand features (`name:output`) are
        computed from their inputs: view features read here and `request` fields (field -> one
        value per row); their status is ok, or missing where the function returned NaN.
        """
        refs = _refs(self, features, service)
        rows = _entity_rows(entities)  # checks that every key has as many rows
        when = _as_of_us(as_of)
        plan = self.registry.plan(refs)
        read = self._read_views(entities, list(plan.views.values()), when)
        columns = dict(zip(plan.views, read, strict=True))
        outputs: dict[str, dict[str, F64]] = {}
        for key, registered in plan.on_demand.items():
            inputs = {
                ref: np.array(columns[ref].values, dtype=np.float64)
                for ref in registered.feature.features
            }
            outputs[key] = evaluate(registered.feature, request or {}, inputs, rows)
        response = OnlineResponse({k: list(v) for k, v in entities.items()})
        for asked in plan.asked:
            if asked.on_demand is None:
                response.features[asked.ref] = columns[asked.key]
                continue
            values = outputs[asked.key.rsplit(":", 1)[0]][asked.feature]
            nulls = np.isnan(values).tolist()
            response.features[asked.ref] = FeatureColumn(
                _nullable(values),
                ["missing" if null else "ok" for null in nulls],
                [None] * rows,
            )
        return response

    def _read_views(
        self,
        entities: Mapping[str, Sequence[Any]],
        resolved: Sequence[tuple[RegisteredView, str]],
        when: int,
    ) -> list[FeatureColumn]:
        """One column per resolved view feature, read in one Redis round trip."""
        views: dict[tuple[str, int], RegisteredView] = {}
        for registered, _feature in resolved:
            views.setdefault((registered.name, registered.version), registered)
        reads = []
        for (name, version), registered in views.items():
            keys = registered.view.join_keys
            missing = [k for k in keys if k not in entities]
            if missing:
                raise RequestError(
                    f"view {name!r} is keyed by {keys}; entities lack {missing} "
                    f"(given: {sorted(entities)})"
                )
            reads.append((name, version, self._layout(registered), entity_keys(entities, keys)))
        results = read_views(self.online, reads, when) if reads else []
        by_view = dict(zip(views, results, strict=True))
        statuses = {key: result.statuses() for key, result in by_view.items()}
        columns = []
        for registered, feature in resolved:
            key = (registered.name, registered.version)
            result = by_view[key]
            f = result.features.index(feature)
            times = result.event_times[:, f]
            columns.append(
                FeatureColumn(
                    result.column(f),
                    [row[f] for row in statuses[key]],
                    [None if math.isnan(t) else from_us(int(t)) for t in times.tolist()],
                )
            )
        return columns

    def get_historical_features(
        self,
        entity_rows: Any,
        features: Sequence[str] | None = None,
        service: str | None = None,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        output: str | Path | None = None,
        statuses: bool = False,
    ) -> pa.Table | Path:
        """Point-in-time correct features for each entity row, from the offline log.

        `entity_rows` is a pandas DataFrame, a pyarrow Table or a Parquet path holding the join
        keys, `timestamp_column`, and any other columns (labels), which are carried through.
        Every feature is the value the online store serves at the row's time (see
        docs/semantics.md). `statuses=True` adds a `<feature>__status` column (ok, stale,
        missing) as online reads report it. With `output`, rows stream into that Parquet file
        (for results larger than memory) and its path is returned; otherwise an Arrow table.
        """
        plan = self.registry.plan(_refs(self, features, service))
        offline = OfflineStore(self.settings.offline)
        if plan.has_on_demand:
            table = historical_with_on_demand(
                offline, entity_rows, plan, timestamp_column, full_feature_names, statuses
            )
            if output is None:
                return table
            pq.write_table(table, output)
            return Path(output)
        query = HistoricalQuery(
            offline,
            entity_rows,
            list(plan.views.values()),
            timestamp_column=timestamp_column,
            full_feature_names=full_feature_names,
            statuses=statuses,
        )
        return query.to_parquet(output) if output is not None else query.to_arrow()

    def create_dataset(
        self,
        name: str,
        entity_rows: Any,
        features: Sequence[str] | None = None,
        service: str | None = None,
        timestamp_column: str = "event_timestamp",
    ) -> Dataset:
        """A new version of training dataset `name`: rows, entity rows and a manifest.

        Returns where it is (`.path`), its version and manifest, for training code to record.
        """
        plan = self.registry.plan(_refs(self, features, service))
        return self.datasets.create(name, entity_rows, plan, service, timestamp_column)

    def recreate_dataset(self, ref: str) -> Dataset:
        """Build `name[@version]` again from its manifest, as a new version of the same name.

        Its `content_hash` equals the original's when the offline log still holds the events.
        """
        original = self.datasets.get(ref)
        manifest = original.manifest
        resolved = self.registry.plan(manifest["features"])
        entities = original.read_entities()
        return self.datasets.create(
            original.name, entities, resolved, manifest["service"], manifest["timestamp_column"]
        )

    @cached_property
    def models(self) -> ModelRegistry:
        """The model registry (`settings.models`), opened on first use."""
        return ModelRegistry(self.settings.models)

    def train_model(
        self,
        dataset: str,
        model: str,
        label: str,
        params: Mapping[str, Any] | None = None,
        *,
        objective: Objective | str | None = None,
        validation_fraction: float = 0.2,
        who: str | None = None,
        description: str = "",
    ) -> ModelVersion:
        """Train LightGBM on dataset `NAME[@VERSION]` and register it as the next version of
        `model` (see featurestore.models.train)."""
        return train_model(
            self.datasets.get(dataset),
            model,
            label,
            params,
            registry=self.registry,
            models=self.models,
            objective=objective,
            validation_fraction=validation_fraction,
            who=who,
            description=description,
        )

    def _layout(self, registered: RegisteredView) -> TileLayout:
        key = (registered.name, registered.version)
        if key not in self._layouts:
            self._layouts[key] = TileLayout(registered.view)
        return self._layouts[key]


def _refs(store: FeatureStore, features: Sequence[str] | None, service: str | None) -> list[str]:
    if (features is None) == (service is None):
        raise RequestError("give either features=[...] or service=..., not both or neither")
    if service is not None:
        return store.registry.get_service(service).refs()
    assert features is not None  # noqa: S101 - narrowed above
    if not features:
        raise RequestError("features is empty")
    return list(features)


def _entity_rows(entities: Mapping[str, Sequence[Any]]) -> int:
    if not entities:
        raise RequestError("entities is empty; give each join key a list of values")
    lengths = {key: len(values) for key, values in entities.items()}
    if len(set(lengths.values())) != 1:
        raise RequestError(f"entity key lists differ in length: {lengths}")
    return next(iter(lengths.values()))


def _as_of_us(as_of: datetime | None) -> int:
    try:
        return to_us(as_of or datetime.now(UTC))
    except ValueError as exc:
        raise RequestError(f"as_of: {exc}") from exc


def _nullable(values: Any) -> list[float | None]:
    """A float array as a list, NaN as None."""
    return [None if math.isnan(v) else v for v in values.tolist()]
