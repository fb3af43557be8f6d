"""What one app instance holds: its settings, stores, loaded models and background workers.

Built by `create_app`, started and stopped by its lifespan, and reached by routes through
`request.app.state.serving` (the `serving_state` dependency).
"""

from __future__ import annotations

import secrets
from typing import Annotated

import redis
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import Scope

from featurestore.config import Settings
from featurestore.models.registry import ModelRegistry
from featurestore.redis_client import PROBE, check_eviction_policy, make_client
from featurestore.store import FeatureStore
from serving.errors import Forbidden, Unauthorized
from serving.metrics import ServingMetrics
from serving.model_cache import ModelCache
from serving.prediction_log import PredictionLog
from serving.predictor import Predictor
from serving.shadow import ShadowScorer
from serving.shedding import LoadShedder

__all__ = ["ServingState", "require_admin", "require_read", "require_read_scope", "serving_state"]


class ServingState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.serving
        self.metrics = ServingMetrics()
        self.store = FeatureStore(settings)
        self.online = self.store.online
        # Probes get their own client with short timeouts: /readyz answers within seconds.
        self.health_redis: redis.Redis = make_client(settings.redis, PROBE)
        self.registry: ModelRegistry = self.store.models
        self.models = ModelCache(
            self.registry, self.store.registry, self.config.reload_interval_s, self.metrics
        )
        self.shedder = LoadShedder(self.config, settings.redis, self.metrics)
        self.prediction_log = PredictionLog(
            settings.kafka,
            self.config.prediction_log_topic,
            self.config.prediction_log_queue,
            self.metrics,
        )
        self.shadow = ShadowScorer(self.online, self.prediction_log, self.metrics)
        admin, read = self.config.admin_token, self.config.read_token
        self._admin = admin.get_secret_value().encode() if admin else None
        self._read = read.get_secret_value().encode() if read else None
        self.predictor = Predictor(
            self.models,
            self.online,
            self.metrics,
            self.prediction_log,
            self.shadow,
            self.shedder,
            self.config.max_batch,
        )

    def start(self) -> None:
        # Before anything starts: a Redis that may evict our keys is refused (ConfigError), one
        # that cannot be asked is a warning (it may be down now; requests then answer 503).
        check_eviction_policy(self.settings.redis)
        self.prediction_log.start()
        self.shadow.start()
        self.models.start()

    def stop(self) -> None:
        self.models.stop()
        self.shadow.stop()  # its last results go to the log before the log flushes
        self.prediction_log.stop()
        self.online.close()
        self.metrics.close()

    @property
    def reads_need_token(self) -> bool:
        return self._read is not None

    def check_read(self, token: str | None) -> None:
        """Read endpoints need the read token when one is set (the admin token also reads)."""
        if self._read is None:
            return
        given = _bearer(token)
        if given is None or not (
            secrets.compare_digest(given, self._read)
            or (self._admin is not None and secrets.compare_digest(given, self._admin))
        ):
            raise Unauthorized(
                "this endpoint needs the read token: send 'Authorization: Bearer <token>' "
                "(serving.read_token)"
            )

    def check_admin(self, token: str | None) -> None:
        if self._admin is None:
            raise Forbidden(
                "admin endpoints are disabled: set serving.admin_token (FSTORE_SERVING_ADMIN_TOKEN"
                " or featurestore.yaml) and send it as 'Authorization: Bearer <token>'"
            )
        given = _bearer(token)
        if given is None or not secrets.compare_digest(given, self._admin):
            raise Unauthorized(
                "this endpoint needs the admin token: send 'Authorization: Bearer <token>' "
                "(serving.admin_token)"
            )


def _bearer(token: str | None) -> bytes | None:
    return token.strip().encode() if token and token.strip() else None


# Declared for OpenAPI ("Authorize" in /docs); the checks themselves are ours, with messages
# that say which token is needed.
_BEARER = HTTPBearer(auto_error=False, description="serving.read_token or serving.admin_token")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]


def serving_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


# async: FastAPI would run a plain `def` dependency in its thread pool, a hop per request.
async def require_read(request: Request, credentials: Credentials) -> None:
    serving_state(request).check_read(None if credentials is None else credentials.credentials)


async def require_admin(request: Request, credentials: Credentials) -> None:
    serving_state(request).check_admin(None if credentials is None else credentials.credentials)


async def require_read_scope(state: ServingState, scope: Scope) -> None:
    """`require_read` for a raw ASGI request (the predict fast path), with the same bearer
    parsing: both ways in take and refuse the same headers."""
    if state.reads_need_token:
        credentials = await _BEARER(HTTPConnection(scope))
        state.check_read(None if credentials is None else credentials.credentials)
