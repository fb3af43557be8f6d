"""`POST /v1/predict/{model}`: score entity rows with the model's traffic split (or one alias).

The app answers this path in front of FastAPI (serving/fastpath.py); this route documents it in
OpenAPI and answers when FastAPI is called directly. Both call `Predictor.predict`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.background import BackgroundTask

from serving.auth import Guard
from serving.schemas import PredictRequest, PredictResponse, documented_errors, inline_body
from serving.state import serving_state

__all__ = ["ROUTE", "router"]

ROUTE = "/v1/predict/{model}"

router = APIRouter(tags=["predict"])

_ERRORS = documented_errors(
    {
        401: "No valid API key was sent.",
        403: "The key lacks `predict:<model>`.",
        404: "Unknown model or alias, or the model serves no traffic.",
        413: "Too many rows (serving.max_batch) or too large a body (serving.max_body_bytes).",
        422: "Malformed body: wrong types or lengths, unknown features, missing entity keys.",
        503: (
            "The online store (Redis) cannot serve now (unreachable, silent past "
            "serving.redis_deadline_ms, or answering LOADING, BUSY, MASTERDOWN...), "
            "serving.max_in_flight requests are in flight, or the model could not be loaded: "
            "retry after Retry-After seconds."
        ),
    }
)
_ERRORS[200] = {"model": PredictResponse, "description": "A score per row."}


@router.post(
    ROUTE,
    dependencies=[Depends(Guard("predict:{model}"))],
    openapi_extra=inline_body(PredictRequest),
    responses=_ERRORS,
    response_class=Response,
    summary="Score entity rows",
)
async def predict(
    model: str,
    request: Request,
    alias: Annotated[
        str | None,
        Query(description="Score every row with this alias, bypassing the traffic split."),
    ] = None,
) -> Response:
    predictor = serving_state(request).predictor
    scored = await predictor.predict(model, await request.body(), alias)
    # Metrics, prediction log and shadow job once the answer is sent, as on the fast path.
    return Response(
        scored.answer, media_type="application/json", background=BackgroundTask(scored.after)
    )
