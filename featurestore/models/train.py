"""Train a LightGBM model on a versioned dataset and register it with its lineage.

The split is by time, never random: rows are sorted by the dataset's timestamp column and the
newest `validation_fraction` validate, so the validation metrics estimate how the model does on
data from after it was trained — as in production. Rows sharing the boundary timestamp all go
to validation, so every validation row is strictly later than every training row.
Missing feature values stay NaN: LightGBM learns which way to send them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from featurestore.errors import RequestError
from featurestore.models.evaluation import average_precision, log_loss, mae, rmse, roc_auc
from featurestore.models.params import merge_params
from featurestore.models.profile import reference_profile
from featurestore.models.promotion import default_who
from featurestore.models.registry import ModelRegistry
from featurestore.models.versions import (
    DatasetRef,
    FeatureSpec,
    ModelVersion,
    Objective,
    Signature,
)
from featurestore.offline.datasets import Dataset
from featurestore.registry import Registry
from featurestore.repo import parse_ref

__all__ = ["PRIMARY_METRIC", "TrainingData", "evaluate", "load_training_data", "train_model"]

PRIMARY_METRIC = {Objective.BINARY: "auc", Objective.REGRESSION: "rmse"}
Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainingData:
    """A dataset's rows as model inputs, sorted by time."""

    features: tuple[FeatureSpec, ...]
    x: Matrix  # rows x features, NaN where a feature is missing
    y: Matrix
    times: npt.NDArray[np.int64]  # the timestamp column, in its Parquet unit, ascending
    timestamps: pa.ChunkedArray  # the same, as Arrow timestamps (for reporting)


def train_model(
    dataset: Dataset,
    model: str,
    label: str,
    params: Mapping[str, Any] | None = None,
    *,
    registry: Registry,
    models: ModelRegistry,
    objective: Objective | str | None = None,
    validation_fraction: float = 0.2,
    who: str | None = None,
    description: str = "",
) -> ModelVersion:
    """Train `model` on `dataset` to predict `label`; register it in `models`.

    `registry` is the feature registry the dataset was built from: the model's entity keys are
    the join keys of its views. Every feature column of the dataset is an input. `objective`
    defaults to binary when the labels are all 0 or 1, else regression. Metrics are computed on
    the validation rows. `FeatureStore.train_model` calls this with its own parts.
    """
    import lightgbm as lgb  # loads OpenMP (~0.4 s): only training needs it

    if not 0 < validation_fraction < 1:
        raise RequestError(
            f"validation_fraction must be between 0 and 1, not {validation_fraction}"
        )
    data = load_training_data(dataset, label)
    chosen = _objective(data.y, objective, label)
    cut = _time_split(data.times, validation_fraction)
    x_train, y_train, x_valid, y_valid = data.x[:cut], data.y[:cut], data.x[cut:], data.y[cut:]
    if chosen is Objective.BINARY:
        for part, labels in (("training", y_train), ("validation", y_valid)):
            if np.unique(labels).size < 2:
                raise RequestError(
                    f"the {part} rows of {dataset.ref} hold only label {labels[0]:g}: AUC needs "
                    "both classes; use more rows or another validation_fraction"
                )

    used = merge_params(chosen.value, params)
    names = [spec.name for spec in data.features]
    train_set = lgb.Dataset(x_train, label=y_train, feature_name=names, free_raw_data=True)
    valid_set = lgb.Dataset(x_valid, label=y_valid, reference=train_set)
    booster = lgb.train(used, train_set, valid_sets=[valid_set], valid_names=["validation"])
    best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    scores = np.asarray(booster.predict(x_valid, num_iteration=best), dtype=np.float64)

    boundary = data.timestamps[cut].as_py()
    used["best_iteration"] = best
    used["split"] = {
        "by": dataset.manifest["timestamp_column"],
        "validation_fraction": validation_fraction,
        "training_rows": int(cut),
        "validation_rows": int(len(y_valid)),
        "validation_from": _iso(boundary),
    }
    return models.register(
        model,
        booster.model_to_string(num_iteration=best),
        objective=chosen,
        signature=Signature(
            data.features, _entity_keys(registry, dataset), dataset.manifest["service"]
        ),
        label=label,
        dataset=DatasetRef(dataset.name, dataset.version, dataset.manifest["content_hash"]),
        views={view: int(v["version"]) for view, v in dataset.manifest["views"].items()},
        params=used,
        metrics=evaluate(chosen, y_valid, scores),
        primary_metric=PRIMARY_METRIC[chosen],
        profile=reference_profile(dict(zip(names, x_train.T, strict=True)), scores),
        who=who or default_who(),
        description=description,
    )


def load_training_data(dataset: Dataset, label: str) -> TrainingData:
    """The dataset's feature columns (from its manifest) and `label`, sorted by time; its rows
    checked against the manifest's content hash first, so a model's lineage is true."""
    manifest = dataset.manifest
    if dataset.content_hash() != manifest["content_hash"]:
        raise RequestError(
            f"the rows of dataset {dataset.ref} ({dataset.path}) changed since it was created: "
            "their content hash differs from the manifest's; recreate the dataset"
        )
    table = dataset.read()
    specs = []
    for text in manifest["features"]:
        ref = parse_ref(text)
        specs.append(FeatureSpec(ref=text, name=f"{ref.view}__{ref.feature}"))
    names = [spec.name for spec in specs]
    if label not in table.column_names:
        others = [c for c in table.column_names if c not in names]
        raise RequestError(
            f"dataset {dataset.ref} has no column {label!r} to use as the label "
            f"(its non-feature columns: {', '.join(others)})"
        )
    if label in names:
        raise RequestError(f"{label!r} is a feature of dataset {dataset.ref}, not a label")
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise RequestError(f"dataset {dataset.ref} lacks its feature columns {missing}")
    if table.num_rows == 0:
        raise RequestError(f"dataset {dataset.ref} has no rows")

    timestamps = table.column(manifest["timestamp_column"])
    if timestamps.null_count:
        raise RequestError(f"{timestamps.null_count} rows of {dataset.ref} have no timestamp")
    times = timestamps.cast(pa.int64()).to_numpy()
    order = np.argsort(times, kind="stable")
    try:
        y = np.asarray(table.column(label).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise RequestError(f"label {label!r} of {dataset.ref} is not numeric: {exc}") from exc
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        raise RequestError(
            f"label {label!r} of {dataset.ref} is missing or not finite in {bad} rows; "
            "drop those entity rows and create the dataset again"
        )
    texts = [
        n
        for n in names
        if pa.types.is_string(table.column(n).type) or pa.types.is_list(table.column(n).type)
    ]
    if texts:
        raise RequestError(
            f"features {texts} of {dataset.ref} are strings or lists (`first` / `last` of a "
            "string column, `last_n`); a model takes numeric features: leave them out, or "
            "derive a number from them with a request-time feature"
        )
    x = np.column_stack(
        [
            np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
            for name in names
        ]
    )
    return TrainingData(tuple(specs), x[order], y[order], times[order], timestamps.take(order))


def evaluate(objective: Objective, y: Matrix, scores: Matrix) -> dict[str, float]:
    """The validation metrics of an objective (the first is the primary one)."""
    if objective is Objective.BINARY:
        return {
            "auc": roc_auc(y, scores),
            "pr_auc": average_precision(y, scores),
            "logloss": log_loss(y, scores),
        }
    return {"rmse": rmse(y, scores), "mae": mae(y, scores)}


def _objective(y: Matrix, objective: Objective | str | None, label: str) -> Objective:
    binary_labels = bool(np.isin(y, (0.0, 1.0)).all())
    if objective is None:
        return Objective.BINARY if binary_labels else Objective.REGRESSION
    try:
        chosen = Objective(objective)
    except ValueError:
        raise RequestError(
            f"objective {objective!r} is not one of {', '.join(o.value for o in Objective)}"
        ) from None
    if chosen is Objective.BINARY and not binary_labels:
        raise RequestError(
            f"objective binary needs labels 0 or 1, but {label!r} has other values "
            f"(e.g. {sorted(set(y[~np.isin(y, (0.0, 1.0))].tolist()))[:3]}); use regression"
        )
    return chosen


def _time_split(times: npt.NDArray[np.int64], fraction: float) -> int:
    """The index of the first validation row (rows sorted by time)."""
    rows = times.size
    cut = rows - max(1, math.ceil(rows * fraction - 1e-9))
    # Rows at the boundary's time all validate: training must end strictly before it.
    cut = int(np.searchsorted(times, times[cut], side="left")) if cut > 0 else 0
    if cut == 0:
        raise RequestError(
            f"cannot split {rows} rows by time: the newest {fraction:.0%} share their timestamp "
            "with every older row; the dataset needs rows at more distinct times"
        )
    return cut


def _entity_keys(registry: Registry, dataset: Dataset) -> tuple[str, ...]:
    keys: list[str] = []
    for view, pinned in dataset.manifest["views"].items():
        registered = registry.get_view(view, int(pinned["version"]))
        keys.extend(key for key in registered.view.join_keys if key not in keys)
    return tuple(keys)


def _iso(value: object) -> str | None:
    if not isinstance(value, datetime):
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
