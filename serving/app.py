"""The scoring API: `create_app(settings)` builds a FastAPI app (OpenAPI docs at /docs).

Its lifespan checks that Redis evicts no keys (`check_eviction_policy`), loads the models and
starts the model poller, the shadow scorer and the prediction log; shutdown stops them in
reverse, flushing the log to Kafka. `POST /v1/predict/{model}` is answered in front of FastAPI
by the fast path (fastpath.py); every other request goes through FastAPI. In front of both,
requests past `serving.max_in_flight` are refused at once (shedding.py).

>>> app = create_app(Settings())  # doctest: +SKIP
>>> uvicorn.run(app)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from featurestore import __version__
from featurestore.config import Settings, load_settings
from serving.body_limit import BodyLimitMiddleware
from serving.error_responses import ANSWERED, error_response
from serving.fastpath import PredictFastPath
from serving.metrics import LatencyMiddleware
from serving.routes import admin, drift, features, health, models, predict, ui
from serving.shedding import LoadShedder
from serving.state import ServingState

__all__ = ["ScoringApp", "create_app", "load_app"]


class ScoringApp(FastAPI):
    """FastAPI with the predict fast path in front: routing, dependencies and middlewares cost
    more than scoring one entity, so predict requests skip them (the route stays, for /docs).

    In front of both, the bound on requests in flight (shedding.py): a request past it is
    refused at once, whichever way it would have gone in."""

    def __init__(self, fast_path: PredictFastPath, shedder: LoadShedder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_path = fast_path
        self.shedder = shedder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        shedder = self.shedder
        if not shedder.counts(scope):  # the lifespan, health probes, /metrics
            await super().__call__(scope, receive, send)
            return
        if shedder.in_flight >= shedder.limit:
            await shedder.refuse(scope, receive, send)
            return
        shedder.in_flight += 1
        try:
            if self.fast_path.takes(scope):
                await self.fast_path(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            shedder.in_flight -= 1


def create_app(settings: Settings) -> ScoringApp:
    state = ServingState(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.start()
        # What start-up built (frameworks, models, plans) lives as long as the server. Frozen,
        # the collector no longer walks it: a full collection of it was a ~50 ms pause on
        # whatever request it fell on (bench/serving.py's model and world).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # an app in a longer-lived process (tests) leaves it as it was
            state.stop()

    app = ScoringApp(
        PredictFastPath(state),
        state.shedder,
        title="fstore scoring API",
        version=__version__,
        description="Online features and LightGBM scores, with canary, shadow and hot reload.",
        lifespan=lifespan,
    )
    app.state.serving = state
    for router in (
        predict.router,
        features.router,
        models.router,
        admin.router,
        drift.router,
        health.router,
    ):
        app.include_router(router)
    app.include_router(ui.router)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.serving.max_body_bytes, metrics=state.metrics
    )
    app.add_middleware(LatencyMiddleware, metrics=state.metrics)

    async def on_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ANSWERED)  # noqa: S101 - registered for these
        return error_response(exc, state.metrics)

    for kind in ANSWERED:
        app.add_exception_handler(kind, on_error)
    return app


def load_app() -> ScoringApp:
    """The app for `uvicorn --factory` (each worker process builds its own)."""
    return create_app(load_settings())
