"""A registered model version and its lineage: what it was trained on, how, and how well.

These records are what a server needs to load a model and ask the feature store for exactly
the features it was trained with (`Signature`: pinned `view@version:feature` refs, in order).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["DatasetRef", "FeatureSpec", "ModelVersion", "Objective", "Signature"]


class Objective(StrEnum):
    BINARY = "binary"
    REGRESSION = "regression"


@dataclass(frozen=True)
class FeatureSpec:
    """One model input, in the model's order."""

    ref: str  # pinned feature ref: "view@version:feature"
    name: str  # the column name in the dataset and the model's feature name ("view__feature")
    dtype: str = "float64"


@dataclass(frozen=True)
class Signature:
    features: tuple[FeatureSpec, ...]
    entity_keys: tuple[str, ...]  # join keys the features need, e.g. ("user_id",)
    service: str | None = None  # the feature service the dataset was built from, if any

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; `Signature.from_dict(s.to_dict()) == s`."""
        return {
            "features": [{"ref": f.ref, "name": f.name, "dtype": f.dtype} for f in self.features],
            "entity_keys": list(self.entity_keys),
            "service": self.service,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            features=tuple(FeatureSpec(**spec) for spec in data["features"]),
            entity_keys=tuple(data["entity_keys"]),
            service=data.get("service"),
        )


@dataclass(frozen=True)
class DatasetRef:
    name: str
    version: int
    content_hash: str


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    objective: Objective
    artifact: Path  # model.txt, LightGBM's text format
    artifact_sha256: str
    signature: Signature
    label: str
    dataset: DatasetRef
    views: dict[str, int]  # feature view name -> version the features came from
    params: dict[str, Any]
    metrics: dict[
        str, float
    ]  # validation metrics (binary: auc, pr_auc, logloss; regression: rmse, mae)
    primary_metric: str  # "auc" (higher is better) or "rmse" (lower is better)
    libraries: dict[str, str]  # lightgbm, fstore, python, numpy
    profile: dict[str, Any]  # reference profile for drift (see featurestore.models.profile)
    created_at: datetime  # UTC
    created_by: str
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"
