"""Request and response bodies, as pydantic models for OpenAPI (/docs, schemathesis).

The predict and features bodies are parsed by hand from raw bytes (`inputs.py`) on the hot path;
these models document the same shapes. Request bodies stay flat (no nested models), so their
JSON Schema can sit inline in `openapi_extra` without `$defs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AliasChange",
    "AuditOut",
    "ErrorOut",
    "FeatureColumnOut",
    "FeaturesRequest",
    "FeaturesResponse",
    "ModelDetailOut",
    "ModelSummaryOut",
    "PredictRequest",
    "PredictResponse",
    "RollbackRequest",
    "TrafficChange",
    "VersionOut",
    "documented_errors",
    "inline_body",
]

EntityValues = list[str | int] | str | int


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entities: dict[str, EntityValues] = Field(
        description="Join key -> one value per row; a single value is one row.",
        examples=[{"user_id": ["u1", "u2"]}],
    )
    request_features: dict[str, list[float | None] | float | None] | None = Field(
        default=None,
        description="Request-time values by model feature name (one per row), replacing or "
        "adding to what the online store gives; null is missing.",
    )
    request: (
        dict[str, list[str | int | float | bool | None] | str | int | float | bool | None] | None
    ) = Field(
        default=None,
        description="Request fields of the model's on-demand features, field -> one value per "
        "row (typed by the feature's RequestSource): the functions compute from them.",
        examples=[{"amount": [12.5, 900.0]}],
    )
    return_features: bool = Field(
        default=False, description="Also return the feature vectors that were scored."
    )
    score_missing: bool = Field(
        default=False,
        description="Score rows whose every feature is missing too (no event in any window of "
        "the online store, no request feature). By default such a row is answered without a "
        "score (status unscored): its score would say nothing of the entity.",
    )


class PredictResponse(BaseModel):
    model: str
    request_id: str
    scores: list[float | None] = Field(description="Per row, its score; null when unscored.")
    statuses: list[Literal["scored", "unscored"]] = Field(
        description="Per row: scored, or unscored (every feature missing, and score_missing "
        "not asked for: see reasons)."
    )
    reasons: list[str | None] = Field(description="Per row, why it is unscored; null if scored.")
    versions: list[int] = Field(description="The model version that scored each row.")
    aliases: list[str] = Field(description="The alias (production, canary, ...) of each row.")
    missing: list[list[str]] = Field(description="Per row, the features scored as missing.")
    features: dict[str, list[float | None]] | None = Field(
        default=None, description="Model feature name -> value per row (return_features only)."
    )


class FeaturesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: list[str] | None = Field(
        default=None, description="Refs like 'view:feature' or 'view@2:feature'."
    )
    feature_service: str | None = Field(default=None, description="A feature service, instead.")
    entities: dict[str, EntityValues] = Field(examples=[{"user_id": ["u1", "u2"]}])
    request: (
        dict[str, list[str | int | float | bool | None] | str | int | float | bool | None] | None
    ) = Field(
        default=None,
        description="Request fields of the on-demand features asked for, field -> one value "
        "per row.",
    )


class FeatureColumnOut(BaseModel):
    values: list[float | str | None] = Field(
        description="Per row; a string for `first` / `last` of a string column."
    )
    statuses: list[str] = Field(description="ok | stale | missing, per row.")
    event_timestamps: list[datetime | None]


class FeaturesResponse(BaseModel):
    entities: dict[str, list[str | int]]
    features: dict[str, FeatureColumnOut]


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong and what to do.")


class VersionOut(BaseModel):
    version: int
    objective: str
    label: str
    features: list[str] = Field(description="Pinned feature refs, in the model's column order.")
    feature_names: list[str]
    entity_keys: list[str]
    dataset: dict[str, Any] = Field(description="Lineage: the training dataset.")
    views: dict[str, int] = Field(description="Lineage: feature view -> version.")
    metrics: dict[str, float]
    primary_metric: str
    params: dict[str, Any]
    libraries: dict[str, str]
    artifact_sha256: str
    created_at: datetime
    created_by: str
    description: str
    loaded: bool = Field(description="Whether this server holds it in memory.")


class ModelSummaryOut(BaseModel):
    name: str
    versions: list[int]
    aliases: dict[str, int]
    traffic: dict[str, float]


class ModelDetailOut(BaseModel):
    name: str
    aliases: dict[str, int]
    traffic: dict[str, float]
    versions: list[VersionOut]


class AuditOut(BaseModel):
    id: int
    model: str
    at: datetime
    who: str
    action: str
    alias: str | None
    from_version: int | None
    to_version: int | None
    reason: str
    detail: dict[str, Any]


class AliasChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    reason: str = ""
    force: bool = Field(default=False, description="Promote past the metric gate (needs a reason).")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = "production"
    reason: str = ""


class TrafficChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(examples=[{"production": 0.9, "canary": 0.1}])
    reason: str = ""


def inline_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring `model` the JSON body of a route that reads the raw bytes."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def documented_errors(errors: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route for OpenAPI: each error status, what it means, and its body (every
    error answers `{"detail": ...}`, error_responses.py)."""
    return {status: {"model": ErrorOut, "description": text} for status, text in errors.items()}
