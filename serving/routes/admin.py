"""Admin endpoints: aliases, rollback and traffic.

Each change is audited by the registry, with the caller's API key name as who (never a header
the client chooses: a key with `admin` is the identity), then this server reloads at once;
other replicas follow at their next poll (`serving.reload_interval_s`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from featurestore.models.registry import AuditEntry
from serving.auth import Caller, Guard
from serving.errors import NotFound, Unauthorized
from serving.routes.models import audit_out, known_model
from serving.schemas import (
    AliasChange,
    AuditOut,
    RollbackRequest,
    TrafficChange,
    documented_errors,
)
from serving.state import ServingState, serving_state

__all__ = ["router"]

_GUARD = Guard("admin")
router = APIRouter(tags=["admin"], dependencies=[Depends(_GUARD)])

_RESPONSES = documented_errors(
    {
        401: "No valid API key was sent.",
        403: "The key lacks `admin`.",
        404: "Unknown model or alias.",
        409: "Refused by the promotion gate (see force).",
        422: "The registry refused the change; it says why.",
    }
)


async def _actor(caller: Annotated[Caller | None, Depends(_GUARD)]) -> str:
    """The audit's who: the key's name (admin is always guarded, so there is one)."""
    if caller is None:  # pragma: no cover - KeyRing.guards("admin") is always true
        raise Unauthorized("admin needs an API key with scope 'admin'")
    return caller.name


Actor = Annotated[str, Depends(_actor)]


@router.put(
    "/v1/models/{name}/aliases/{alias}", summary="Point an alias at a version", responses=_RESPONSES
)
def set_alias(
    name: str, alias: str, change: AliasChange, request: Request, actor: Actor
) -> AuditOut:
    state = serving_state(request)
    known_model(state, name)
    entry = state.registry.set_alias(
        name, alias, change.version, who=actor, reason=change.reason, force=change.force
    )
    return _applied(state, entry)


@router.delete("/v1/models/{name}/aliases/{alias}", summary="Remove an alias", responses=_RESPONSES)
def remove_alias(
    name: str,
    alias: str,
    request: Request,
    actor: Actor,
    reason: Annotated[str, Query(description="Why, for the audit history.")] = "",
) -> AuditOut:
    state = serving_state(request)
    _known_alias(state, name, alias)
    return _applied(state, state.registry.remove_alias(name, alias, who=actor, reason=reason))


@router.post(
    "/v1/models/{name}/rollback",
    summary="Point an alias back at its previous version",
    responses=_RESPONSES,
)
def rollback(name: str, change: RollbackRequest, request: Request, actor: Actor) -> AuditOut:
    state = serving_state(request)
    _known_alias(state, name, change.alias)
    entry = state.registry.rollback(name, change.alias, who=actor, reason=change.reason)
    return _applied(state, entry)


@router.put("/v1/models/{name}/traffic", summary="Set traffic weights", responses=_RESPONSES)
def set_traffic(name: str, change: TrafficChange, request: Request, actor: Actor) -> AuditOut:
    state = serving_state(request)
    known_model(state, name)
    entry = state.registry.set_traffic(name, change.weights, who=actor, reason=change.reason)
    return _applied(state, entry)


def _known_alias(state: ServingState, name: str, alias: str) -> None:
    known_model(state, name)
    aliases = state.registry.rollout(name).aliases
    if alias not in aliases:
        raise NotFound(
            f"model {name!r} has no alias {alias!r} (its aliases: "
            f"{', '.join(sorted(aliases)) or 'none'})"
        )


def _applied(state: ServingState, entry: AuditEntry) -> AuditOut:
    # This replica serves the change before answering; the poller would take up to an interval.
    state.models.refresh()
    return audit_out(entry)
