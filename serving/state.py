"""What one app instance holds: its settings, stores, loaded models and background workers.

Built by `create_app`, started and stopped by its lifespan, and reached by routes through
`request.app.state.serving` (the `serving_state` dependency).
"""

from __future__ import annotations

import redis
from fastapi import Request

from featurestore.config import Settings
from featurestore.models.registry import ModelRegistry
from featurestore.redis_client import PROBE, check_eviction_policy, make_client
from featurestore.store import FeatureStore
from serving.auth import KeyRing
from serving.metrics import ServingMetrics
from serving.model_cache import ModelCache
from serving.prediction_log import PredictionLog
from serving.predictor import Predictor
from serving.shadow import ShadowScorer
from serving.shedding import LoadShedder

__all__ = ["ServingState", "serving_state"]


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
        self.keys = KeyRing(settings)
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
        self.keys.start()  # a key registry that cannot be read fails the start
        self.prediction_log.start()
        self.shadow.start()
        self.models.start()

    def stop(self) -> None:
        self.keys.stop()
        self.models.stop()
        self.shadow.stop()  # its last results go to the log before the log flushes
        self.prediction_log.stop()
        self.online.close()
        self.metrics.close()


def serving_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state
