"""Typed results of the HTTP API, validated as they arrive. Fields the server adds later are
ignored, so an older client keeps working against a newer server."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict

__all__ = ["FeatureColumn", "FeatureValues", "ModelSummary", "Prediction"]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Prediction(_Result):
    """`POST /v1/predict/{model}`: per row, its score (None: unscored, see `reasons`), the
    version and alias that scored it and the features that were missing."""

    model: str
    request_id: str
    scores: list[float | None]
    statuses: list[str]  # scored | unscored (a str: a newer server may add one)
    reasons: list[str | None]
    versions: list[int]
    aliases: list[str]
    missing: list[list[str]]
    features: dict[str, list[float | None]] | None = None  # with return_features=True


class FeatureColumn(_Result):
    """One feature's values per row, their statuses (ok | stale | missing) and event times."""

    values: list[float | None]
    statuses: list[str]
    event_timestamps: list[AwareDatetime | None]


class FeatureValues(_Result):
    """`POST /v1/features`: the entity rows and, per feature ref, a column of values."""

    entities: dict[str, list[str | int]]
    features: dict[str, FeatureColumn]

    def values(self, ref: str) -> list[float | None]:
        """The values of one feature, in row order."""
        return self.features[ref].values


class ModelSummary(_Result):
    """`GET /v1/models`: a model's versions, aliases and traffic split."""

    name: str
    versions: list[int]
    aliases: dict[str, int]
    traffic: dict[str, float]
