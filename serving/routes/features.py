"""`POST /v1/features`: online feature values with their statuses and event timestamps."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from serving.inputs import parse_features
from serving.schemas import ErrorOut, FeaturesRequest, FeaturesResponse, inline_body
from serving.state import ServingState, require_read

__all__ = ["router"]

router = APIRouter(tags=["features"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": FeaturesResponse, "description": "Values, statuses and event times per ref."},
    401: {"model": ErrorOut, "description": "A read token is configured and was not sent."},
    413: {"model": ErrorOut, "description": "Too many rows or too large a body."},
    422: {"model": ErrorOut, "description": "Unknown refs or service, bad entities."},
    503: {"model": ErrorOut, "description": "The online store (Redis) is unreachable."},
}


@router.post(
    "/v1/features",
    dependencies=[Depends(require_read)],
    openapi_extra=inline_body(FeaturesRequest),
    responses=_RESPONSES,
    response_class=Response,
    summary="Read online features",
)
async def features(request: Request) -> Response:
    state: ServingState = request.app.state.serving
    parsed = parse_features(await request.body(), state.config.max_batch)
    # Registry lookups (SQLite) and the Redis round trip block: off the event loop.
    online = await run_in_threadpool(
        state.store.get_online_features,
        parsed.entities,
        features=parsed.features,
        service=parsed.service,
    )
    return Response(orjson.dumps(online.to_dict()), media_type="application/json")
