"""Each package exports a small, deliberate public API."""

from __future__ import annotations

import featurestore
import featurestore.services
import serving
import streaming


def test_featurestore_exports() -> None:
    assert featurestore.__all__ == [
        "Aggregation",
        "ConfigError",
        "DefinitionError",
        "Entity",
        "FeatureService",
        "FeatureStore",
        "FeatureStoreError",
        "FeatureView",
        "KafkaSource",
        "OnlineResponse",
        "OnlineStoreError",
        "RegisteredView",
        "Registry",
        "RegistryError",
        "RequestError",
        "ServiceError",
        "Settings",
        "__version__",
        "load_repo",
        "load_settings",
    ]
    for name in featurestore.__all__:
        assert hasattr(featurestore, name)


def test_services_exports() -> None:
    assert sorted(featurestore.services.__all__) == [
        "KafkaServer",
        "KafkaStatus",
        "RedisServer",
        "RedisStatus",
        "broker_answers",
        "free_port",
    ]


def test_streaming_and_serving_exports() -> None:
    assert streaming.__all__ == [
        "StreamingError",
        "Worker",
        "backfill_from_log",
        "backfill_from_topic",
        "ensure_topic",
    ]
    for name in streaming.__all__:
        assert hasattr(streaming, name)
    assert serving.__all__ == ["ModelCache", "PredictionLog", "ServingError", "create_app"]
    for name in serving.__all__:
        assert hasattr(serving, name)
