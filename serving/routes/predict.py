"""`POST /v1/predict/{model}`: score entity rows with the model's rollout.

The hot path: raw body -> orjson -> checks -> one Redis round trip -> one `Booster.predict` per
version -> orjson response. The prediction log and the shadow alias only get a queue append.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from featurestore.models.registry import SHADOW
from featurestore.timestamps import to_us
from serving.inputs import PredictInput, parse_predict
from serving.models import LoadedModel
from serving.prediction_log import SERVED, LogBatch, LogGroup
from serving.schemas import ErrorOut, PredictRequest, PredictResponse, inline_body
from serving.scoring import Group, missing_names, plan_groups, score_groups
from serving.shadow import ShadowJob
from serving.state import ServingState, require_read

__all__ = ["router"]

router = APIRouter(tags=["predict"])

# A few rows score in well under a millisecond: on the event loop that beats a hop to a worker
# thread (bench/serving.py, 1 user saturated: 1030 vs 726 req/s, p99 68 vs 139 ms). A large
# batch waits ~10 ms on Redis: in a thread, other requests go on meanwhile (100 users saturated:
# 171 vs 81 req/s). Redis calls time out (OnlineStore), so the loop is never held for long.
_INLINE_ROWS = 16

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        401: "A read token is configured and was not sent.",
        404: "Unknown model or alias, or the model serves no traffic.",
        413: "Too many rows (serving.max_batch) or too large a body (serving.max_body_bytes).",
        422: "Malformed body: wrong types or lengths, unknown features, missing entity keys.",
        503: "The online store (Redis) is unreachable, or the model could not be loaded.",
    }.items()
}
_ERRORS[200] = {"model": PredictResponse, "description": "A score per row."}


@router.post(
    "/v1/predict/{model}",
    dependencies=[Depends(require_read)],
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
    start = time.perf_counter()
    state: ServingState = request.app.state.serving
    parsed = parse_predict(await request.body(), state.config.max_batch)
    loaded = state.models.snapshot.get(model)
    groups = plan_groups(loaded, parsed, alias)
    at = datetime.now(UTC)
    as_of_us = to_us(at)
    if parsed.rows <= _INLINE_ROWS:
        score_groups(state.online, groups, parsed, as_of_us)
    else:
        # Redis and LightGBM release the GIL: in a worker thread they overlap other requests.
        await run_in_threadpool(score_groups, state.online, groups, parsed, as_of_us)
    request_id = uuid.uuid4().hex
    body = _response(loaded.name, request_id, groups, parsed)
    _record(state, loaded, groups, parsed, request_id, at, as_of_us, alias)
    elapsed = time.perf_counter() - start
    for group in groups:
        state.metrics.model_latency.labels(loaded.name, str(group.version.version)).observe(elapsed)
    return Response(body, media_type="application/json")


def _response(model: str, request_id: str, groups: list[Group], parsed: PredictInput) -> bytes:
    rows = parsed.rows
    if len(groups) == 1:
        group = groups[0]
        assert group.scores is not None  # noqa: S101 - scored
        scores: list[float] = group.scores.tolist()
        versions = [group.version.version] * rows
        aliases = [group.alias] * rows
        missing = missing_names(group)
    else:
        merged = np.empty(rows, dtype=np.float64)
        versions, aliases, missing = [0] * rows, [""] * rows, [[] for _ in range(rows)]
        for group in groups:
            assert group.scores is not None  # noqa: S101 - scored
            merged[group.rows] = group.scores
            for row, names in zip(group.rows.tolist(), missing_names(group), strict=True):
                versions[row], aliases[row], missing[row] = (
                    group.version.version,
                    group.alias,
                    names,
                )
        scores = merged.tolist()
    payload: dict[str, Any] = {
        "model": model,
        "request_id": request_id,
        "scores": scores,
        "versions": versions,
        "aliases": aliases,
        "missing": missing,
    }
    if parsed.return_features:
        payload["features"] = _features(groups, rows)
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def _features(groups: list[Group], rows: int) -> dict[str, list[float | None]]:
    """Model feature name -> scored value per row (NaN -> null); a row whose version lacks a
    feature gets null."""
    names = dict.fromkeys(name for group in groups for name in group.version.names)
    out = {}
    for name in names:
        column = np.full(rows, np.nan)
        for group in groups:
            index = group.version.index.get(name)
            if index is not None and group.matrix is not None:
                column[group.rows] = group.matrix[:, index]
        out[name] = column.tolist()
    return out


def _record(
    state: ServingState,
    loaded: LoadedModel,
    groups: list[Group],
    parsed: PredictInput,
    request_id: str,
    at: datetime,
    as_of_us: int,
    alias: str | None,
) -> None:
    """Metrics, the prediction log and the shadow job: counters and queue appends only."""
    metrics = state.metrics
    for group in groups:
        assert group.matrix is not None  # noqa: S101 - scored
        version = str(group.version.version)
        metrics.predictions.labels(loaded.name, version, group.alias, SERVED).inc(len(group.rows))
        missing = np.isnan(group.matrix).sum(axis=0)
        for column in np.flatnonzero(missing):
            metrics.missing_features.labels(loaded.name, group.version.names[column]).inc(
                int(missing[column])
            )
    if state.prediction_log.enabled:
        log_groups = tuple(
            LogGroup(g.version.version, g.alias, g.version.names, g.rows, g.matrix, g.scores)
            for g in groups
            if g.matrix is not None and g.scores is not None
        )
        state.prediction_log.submit(
            LogBatch(
                request_id,
                at,
                loaded.name,
                SERVED,
                parsed.entities,
                loaded.route_keys or groups[0].version.entity_keys,
                log_groups,
            )
        )
    shadow = loaded.shadow
    if shadow is not None and alias != SHADOW:
        state.shadow.submit(
            ShadowJob(request_id, at, loaded.name, SHADOW, shadow, parsed, as_of_us)
        )
