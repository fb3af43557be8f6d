"""Liveness, readiness and Prometheus metrics. Open to all: probes and scrapers bring no token."""

from __future__ import annotations

from typing import Any

import orjson
import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from featurestore.errors import OnlineStoreError
from featurestore.models.registry import PRODUCTION
from featurestore.redis_client import redis_errors
from serving.state import serving_state

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready to score: Redis answers and every model with a production alias is loaded",
    responses={503: {"description": "Not ready; `reasons` says why."}},
)
def readyz(request: Request) -> Response:
    state = serving_state(request)
    reasons: list[str] = []
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
        reasons.append(f"model {name!r} is not loaded: {error}")
    loaded: dict[str, Any] = {}
    for name, model in sorted(snapshot.models.items()):
        version = model.rollout.aliases.get(PRODUCTION)
        if version is not None and version not in model.versions:
            reasons.append(f"model {name!r}: production version {version} is not loaded")
        loaded[name] = {"aliases": model.rollout.aliases, "traffic": model.rollout.traffic}
    body = {"ready": not reasons, "reasons": reasons, "models": loaded}
    return Response(
        orjson.dumps(body), status_code=503 if reasons else 200, media_type="application/json"
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    # The host's figures: every worker's of `fstore serve --workers N` (serving/metrics.py).
    host = serving_state(request).metrics.host()
    return Response(generate_latest(host), media_type=CONTENT_TYPE_LATEST)
