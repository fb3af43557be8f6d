"""The scoring API: `create_app(settings)` builds a FastAPI app (OpenAPI docs at /docs).

Its lifespan loads the models and starts the model poller, the shadow scorer and the
prediction log; shutdown stops them in reverse, flushing the log to Kafka.

>>> app = create_app(Settings())  # doctest: +SKIP
>>> uvicorn.run(app)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException

from featurestore import __version__
from featurestore.config import Settings, load_settings
from featurestore.errors import (
    DefinitionError,
    FeatureStoreError,
    OnlineStoreError,
    RegistryError,
    RequestError,
)
from featurestore.models.registry import PromotionRefused
from serving.body_limit import BodyLimitMiddleware
from serving.errors import ServingError
from serving.metrics import LatencyMiddleware
from serving.routes import admin, features, health, models, predict
from serving.state import ServingState

__all__ = ["create_app", "load_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    state = ServingState(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(
        title="fstore scoring API",
        version=__version__,
        description="Online features and LightGBM scores, with canary, shadow and hot reload.",
        lifespan=lifespan,
    )
    app.state.serving = state
    for router in (predict.router, features.router, models.router, admin.router, health.router):
        app.include_router(router)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.serving.max_body_bytes, metrics=state.metrics
    )
    app.add_middleware(LatencyMiddleware, metrics=state.metrics)
    _add_error_handlers(app, state)
    return app


def load_app() -> FastAPI:
    """The app for `uvicorn --factory` (each worker process builds its own)."""
    return create_app(load_settings())


# Errors of the core that a request can cause, and the status each answers with.
_STATUS: tuple[tuple[type[FeatureStoreError], int], ...] = (
    (PromotionRefused, 409),
    (OnlineStoreError, 503),
    (RequestError, 422),
    (DefinitionError, 422),  # a malformed feature ref
    (RegistryError, 422),  # an unknown view, feature, service, version, or a refused change
)


def _add_error_handlers(app: FastAPI, state: ServingState) -> None:
    def answer(status: int, kind: str, detail: str) -> Response:
        state.metrics.errors.labels(kind, str(status)).inc()
        return Response(
            orjson.dumps({"detail": detail}), status_code=status, media_type="application/json"
        )

    async def on_serving_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServingError)  # noqa: S101 - registered for it
        response = answer(exc.status_code, type(exc).__name__, str(exc))
        if exc.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    async def on_core_error(_request: Request, exc: Exception) -> Response:
        for kind, status in _STATUS:
            if isinstance(exc, kind):
                if status == 503:
                    detail = f"{exc}; the online store is down or unreachable: retry later"
                else:
                    detail = str(exc)
                return answer(status, type(exc).__name__, detail)
        log.error("unexpected error answering a request: %s", exc, exc_info=exc)
        return answer(500, type(exc).__name__, f"internal error: {exc}")

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # noqa: S101 - registered for it
        response = answer(exc.status_code, type(exc).__name__, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(FeatureStoreError, on_core_error)
    app.add_exception_handler(HTTPException, on_http_error)
