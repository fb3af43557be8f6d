"""`POST /v1/features`: online feature values with their statuses and event timestamps."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from serving.auth import Caller, Guard
from serving.inputs import parse_features
from serving.schemas import FeaturesRequest, FeaturesResponse, documented_errors, inline_body
from serving.state import ServingState

__all__ = ["router"]

router = APIRouter(tags=["features"])
_GUARD = Guard("features:{service}")  # the body names the service

_RESPONSES = documented_errors(
    {
        401: "No valid API key was sent.",
        403: "The key lacks `features:<service>` (`features:*` for refs outside a service).",
        413: "Too many rows or too large a body.",
        422: "Unknown refs or service, bad entities, a missing or mistyped request field.",
        500: "An on-demand feature's function failed (the body names the feature and error).",
        503: (
            "The online store (Redis) cannot serve now (unreachable, silent past "
            "serving.redis_deadline_ms, or answering LOADING, BUSY, MASTERDOWN...), or "
            "serving.max_in_flight requests are in flight: retry after Retry-After seconds."
        ),
    }
)
_RESPONSES[200] = {
    "model": FeaturesResponse,
    "description": "Values, statuses and event times per ref.",
}


@router.post(
    "/v1/features",
    openapi_extra=inline_body(FeaturesRequest),
    responses=_RESPONSES,
    response_class=Response,
    summary="Read online features",
)
async def features(request: Request, caller: Annotated[Caller | None, Depends(_GUARD)]) -> Response:
    state: ServingState = request.app.state.serving
    parsed = parse_features(await request.body(), state.config.max_batch)
    state.keys.check(caller, f"features:{parsed.service or '*'}")
    # Registry lookups (SQLite) and the Redis round trip block: off the event loop. The answer
    # waits no longer than the Redis deadline; past it, the thread finishes (or times out) on
    # its own, unwaited.
    online = await state.shedder.read(
        run_in_threadpool(
            state.store.get_online_features,
            parsed.entities,
            features=parsed.features,
            service=parsed.service,
            request=parsed.request,
        )
    )
    return Response(orjson.dumps(online.to_dict()), media_type="application/json")
