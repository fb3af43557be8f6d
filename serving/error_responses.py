"""The answer to each error a request can cause: its status, a JSON `{"detail": ...}` that says
what was wrong, its headers, and its count in `fstore_errors`.

app.py's exception handlers and the predict fast path (fastpath.py) both answer through
`error_response`, so an error reads the same whichever way the request came in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response

from featurestore.errors import (
    DefinitionError,
    FeatureStoreError,
    OnDemandError,
    OnlineStoreError,
    RedisUnavailable,
    RegistryError,
    RequestError,
)
from featurestore.models.registry import PromotionRefused
from serving.errors import RateLimited, ServingError, Unavailable
from serving.metrics import ServingMetrics

__all__ = ["ANSWERED", "error_response"]

log = logging.getLogger(__name__)

# The exceptions answered here; anything else is a bug, answered by the server's plain 500.
ANSWERED = (FeatureStoreError, HTTPException)

# Errors of the core that a request can cause, and the status each answers with.
_STATUS: tuple[tuple[type[FeatureStoreError], int], ...] = (
    (PromotionRefused, 409),
    (OnDemandError, 500),  # a request-time feature's function failed: named, no traceback
    (OnlineStoreError, 503),
    (RequestError, 422),
    (DefinitionError, 422),  # a malformed feature ref
    (RegistryError, 422),  # an unknown view, feature, service, version, or a refused change
)


def error_response(exc: FeatureStoreError | HTTPException, metrics: ServingMetrics) -> Response:
    """The answer to `exc`; a 503 always says when to come back (`Retry-After`)."""
    status, detail, headers = _answer(exc)
    metrics.errors.labels(type(exc).__name__, str(status)).inc()
    response = Response(
        orjson.dumps({"detail": detail}), status_code=status, media_type="application/json"
    )
    if headers:
        response.headers.update(headers)
    return response


def _answer(exc: FeatureStoreError | HTTPException) -> tuple[int, str, Mapping[str, str] | None]:
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), exc.headers
    if isinstance(exc, ServingError):
        if isinstance(exc, Unavailable | RateLimited):
            return exc.status_code, str(exc), _retry_after(exc.retry_after_s)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return exc.status_code, str(exc), headers
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            if status == 503:
                wait = exc.retry_after_s if isinstance(exc, RedisUnavailable) else 1.0
                detail = f"{exc}; the online store cannot serve now: retry later"
                return status, detail, _retry_after(wait)
            if status == 500:
                log.warning("%s", exc)  # the message only: the user function's traceback stays out
            return status, str(exc), None
    log.error("unexpected error answering a request: %s", exc, exc_info=exc)
    return 500, f"internal error: {exc}", None


def _retry_after(seconds: float) -> dict[str, str]:
    """`Retry-After` in whole seconds, as HTTP has it, and never 0 (a client would come back at
    once, to the same refusal)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
