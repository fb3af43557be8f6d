"""Liveness, readiness and Prometheus metrics.

The probes are open to all (a kubelet brings no key), and /readyz names models and aliases only
to a key with `models:read` (or while no key exists): without one it says how many models are
not ready, not which. /metrics needs `metrics:read` once keys exist — its labels name models
and features; Prometheus sends a key with `authorization: {credentials: <secret>}`.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import redis
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from featurestore.errors import OnlineStoreError
from featurestore.models.registry import PRODUCTION
from featurestore.redis_client import redis_errors
from serving.auth import Caller, Guard
from serving.state import serving_state

__all__ = ["router"]

router = APIRouter(tags=["health"])
_PROBE = Guard("models:read", required=False)  # a key shows more, none is refused


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready to score: Redis answers and every model with a production alias is loaded",
    responses={503: {"description": "Not ready; `reasons` says why."}},
)
def readyz(request: Request, caller: Annotated[Caller | None, Depends(_PROBE)]) -> Response:
    state = serving_state(request)
    reasons: list[str] = []
    models: list[str] = []
    try:
        with redis_errors(state.settings.redis):
            state.health_redis.ping()
    except OnlineStoreError as exc:
        reasons.append(str(exc))
    except redis.RedisError as exc:  # it answered, with an error (e.g. still loading its data)
        reasons.append(f"Redis at {state.settings.redis.shown_url} refused the probe: {exc}")
    snapshot = state.models.snapshot
    if snapshot.generation < 0:
        reasons.append("the model registry has not been read yet")
    for name, error in sorted(snapshot.errors.items()):
        models.append(f"model {name!r} is not loaded: {error}")
    loaded: dict[str, Any] = {}
    for name, model in sorted(snapshot.models.items()):
        version = model.rollout.aliases.get(PRODUCTION)
        if version is not None and version not in model.versions:
            models.append(f"model {name!r}: production version {version} is not loaded")
        loaded[name] = {"aliases": model.rollout.aliases, "traffic": model.rollout.traffic}
    ready = not reasons and not models
    if state.keys.guarded and (caller is None or not caller.grants("models:read")):
        if models:
            reasons.append(
                f"{len(models)} model(s) not ready (send a key with models:read to see which)"
            )
        body: dict[str, Any] = {"ready": ready, "reasons": reasons}
    else:
        body = {"ready": ready, "reasons": reasons + models, "models": loaded}
    return Response(
        orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json"
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[Depends(Guard("metrics:read"))],
    responses={401: {"description": "No valid API key."}, 403: {"description": "No scope."}},
)
def metrics(request: Request) -> Response:
    # The host's figures: every worker's of `fstore serve --workers N` (serving/metrics.py).
    host = serving_state(request).metrics.host()
    return Response(generate_latest(host), media_type=CONTENT_TYPE_LATEST)
