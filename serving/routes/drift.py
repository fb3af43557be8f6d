"""`GET /v1/drift`: what the drift monitor (`fstore monitor`) found last, from Redis."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from featurestore.drift.state import latest_drift
from serving.auth import Guard
from serving.schemas import ErrorOut
from serving.state import serving_state

__all__ = ["router"]

router = APIRouter(tags=["drift"], dependencies=[Depends(Guard("drift:read"))])


@router.get(
    "/v1/drift",
    summary="Latest drift statistics and open alerts per model",
    responses={
        401: {"model": ErrorOut, "description": "No valid API key was sent."},
        403: {"model": ErrorOut, "description": "The key lacks `drift:read`."},
        503: {"model": ErrorOut, "description": "Redis is unreachable."},
    },
)
async def drift(
    request: Request,
    model: Annotated[str | None, Query(description="One model (default: every model).")] = None,
) -> dict[str, Any]:
    """Per model: the newest record of each (version, role, statistic, feature) — PSI,
    Jensen-Shannon distance, binned KS, sample counts, status — and the open alert episodes.
    A model the monitor has not reported on yet is absent."""
    redis_settings = serving_state(request).settings.redis
    return await run_in_threadpool(latest_drift, redis_settings, model)
