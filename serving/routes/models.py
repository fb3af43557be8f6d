"""Read endpoints of the model registry: versions with lineage, aliases, traffic, history."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from featurestore.models.registry import AuditEntry, ModelVersion
from serving.auth import Guard
from serving.errors import NotFound
from serving.schemas import (
    AuditOut,
    ModelDetailOut,
    ModelSummaryOut,
    VersionOut,
    documented_errors,
)
from serving.state import ServingState, serving_state

__all__ = ["audit_out", "known_model", "router"]

router = APIRouter(tags=["models"], dependencies=[Depends(Guard("models:read"))])

_RESPONSES = documented_errors(
    {
        401: "No valid API key was sent.",
        403: "The key lacks `models:read`.",
        404: "Unknown model.",
    }
)


# Plain `def` routes: the registry is SQLite, and FastAPI runs these in its thread pool.
@router.get("/v1/models", summary="List models", responses=_RESPONSES)
def list_models(request: Request) -> list[ModelSummaryOut]:
    registry = serving_state(request).registry
    out = []
    for name in registry.models():
        rollout = registry.rollout(name)
        out.append(
            ModelSummaryOut(
                name=name,
                versions=[v.version for v in registry.versions(name)],
                aliases=rollout.aliases,
                traffic=rollout.traffic,
            )
        )
    return out


@router.get("/v1/models/{name}", summary="A model's versions and rollout", responses=_RESPONSES)
def get_model(name: str, request: Request) -> ModelDetailOut:
    state = serving_state(request)
    known_model(state, name)
    rollout = state.registry.rollout(name)
    loaded = state.models.snapshot.models.get(name)
    return ModelDetailOut(
        name=name,
        aliases=rollout.aliases,
        traffic=rollout.traffic,
        versions=[
            _version_out(v, loaded is not None and v.version in loaded.versions)
            for v in state.registry.versions(name)
        ],
    )


@router.get("/v1/models/{name}/history", summary="Audit history of a model", responses=_RESPONSES)
def history(name: str, request: Request) -> list[AuditOut]:
    state = serving_state(request)
    known_model(state, name)
    return [audit_out(entry) for entry in state.registry.history(name)]


def known_model(state: ServingState, name: str) -> None:
    """404 for a model the registry does not hold (the registry's own error would be a 422)."""
    models = state.registry.models()
    if name not in models:
        raise NotFound(
            f"unknown model {name!r} (registered: {', '.join(models) or 'none'}); "
            "train and register one first"
        )


def audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(**asdict(entry))


def _version_out(version: ModelVersion, loaded: bool) -> VersionOut:
    signature = version.signature
    return VersionOut(
        version=version.version,
        objective=version.objective.value,
        label=version.label,
        features=[spec.ref for spec in signature.features],
        feature_names=[spec.name for spec in signature.features],
        entity_keys=list(signature.entity_keys),
        dataset=asdict(version.dataset),
        views=version.views,
        metrics=version.metrics,
        primary_metric=version.primary_metric,
        params=version.params,
        libraries=version.libraries,
        artifact_sha256=version.artifact_sha256,
        created_at=version.created_at,
        created_by=version.created_by,
        description=version.description,
        loaded=loaded,
    )
