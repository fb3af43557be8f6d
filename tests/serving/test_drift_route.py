"""`GET /v1/drift` answers what the monitor left in Redis, in the layout of featurestore.drift."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from featurestore.config import RedisSettings, Settings
from featurestore.drift.state import alerts_key, field, latest_key, models_key
from featurestore.services import free_port
from serving import create_app
from tests.redis_target import client_of

pytestmark = pytest.mark.integration


def test_drift_returns_the_monitors_latest_records_and_open_alerts(
    client: TestClient, serving_settings: Settings
) -> None:
    ns, model = serving_settings.redis.namespace, "drift-route-model"
    record = {"model": model, "version": 2, "column": "amount", "psi": 0.31, "status": "alert"}
    score = {"model": model, "version": 2, "column": "score", "psi": 0.02, "status": "ok"}
    store = client_of(serving_settings.redis.url)
    try:
        store.sadd(models_key(ns), model)
        latest, alerts = latest_key(ns, model), alerts_key(ns, model)
        store.hset(latest, field(2, "served", "score", "score"), orjson.dumps(score))
        store.hset(latest, field(2, "served", "feature", "amount"), orjson.dumps(record))
        store.hset(alerts, field(2, "served", "feature", "amount"), orjson.dumps(record))

        answer = client.get("/v1/drift", params={"model": model})
        assert answer.status_code == 200, answer.text
        # Ordered by version, role, kind, column: "feature" sorts before "score".
        want = {"records": [record, score], "alerts": [record]}
        assert answer.json() == {"models": {model: want}}
        assert client.get("/v1/drift").json()["models"][model] == want
        assert client.get("/v1/drift", params={"model": "never-seen"}).json() == {"models": {}}
    finally:
        # The namespace is shared with the other serving tests (the dashboard lists every model).
        store.srem(models_key(ns), model)
        store.delete(latest_key(ns, model), alerts_key(ns, model))


def test_drift_answers_503_when_redis_is_down(serving_settings: Settings) -> None:
    down = serving_settings.model_copy(
        update={"redis": RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")}
    )
    with TestClient(create_app(down)) as client:
        answer = client.get("/v1/drift")
    assert answer.status_code == 503
    assert "unreachable" in answer.json()["detail"]
