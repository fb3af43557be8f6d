"""Every bad request answers 4xx with a message saying what is wrong; outages answer 503."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from featurestore.config import KafkaSettings, RedisSettings, Settings
from featurestore.services import free_port
from serving import create_app
from tests.serving.conftest import USERS, redis_down

pytestmark = pytest.mark.integration

PREDICT = "/v1/predict/fraud"
ONE = {"user_id": ["u1"]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/predict/nope", {"entities": ONE}, 404, "unknown model 'nope'"),
        (PREDICT + "?alias=blue", {"entities": ONE}, 404, "has no alias 'blue'"),
        (
            PREDICT,
            {"entities": ONE, "request_features": {"bogus": [1.0]}},
            422,
            "has no features ['bogus']",
        ),
        (PREDICT, {"entities": {"card": [1]}}, 422, "needs entity keys ['user_id']"),
        (PREDICT, {"entities": {"user_id": [1.5]}}, 422, "entity key values are strings"),
        (
            PREDICT,
            {"entities": ONE, "request_features": {"user_txn__count_2h": ["many"]}},
            422,
            "feature values are numbers",
        ),
        (
            PREDICT,
            {"entities": {"user_id": ["a", "b"]}, "request_features": {"x": [1.0]}},
            422,
            "has 1 values for 2 rows",
        ),
        (
            PREDICT,
            {"entities": {"user_id": ["a", "b"], "card": [1]}},
            422,
            "differ in length",
        ),
        (PREDICT, {"entities": {"user_id": USERS * 11}}, 413, "at most 1000"),
        (PREDICT, {"entities": ONE, "as_of": "now"}, 422, "unknown fields ['as_of']"),
        (
            "/v1/features",
            {"features": ["user_txn:nope"], "entities": ONE},
            422,
            "has no feature 'nope'",
        ),
        ("/v1/features", {"features": ["nope"], "entities": ONE}, 422, "not a feature reference"),
        (
            "/v1/features",
            {"feature_service": "nope", "entities": ONE},
            422,
            "unknown feature service 'nope'",
        ),
        (
            "/v1/features",
            {"features": ["user_txn:count_2h"], "entities": {"card": [1]}},
            422,
            "entities lack ['user_id']",
        ),
    ],
)
def test_bad_requests_say_what_is_wrong(
    client: TestClient, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize("path", [PREDICT, "/v1/features"])
def test_invalid_json(client: TestClient, path: str) -> None:
    headers = {"content-type": "application/json"}
    response = client.post(path, content=b'{"entities": ', headers=headers)
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]


def test_too_large_a_body_is_refused_before_it_is_parsed(client: TestClient) -> None:
    limit = client.app.state.serving.config.max_body_bytes
    body = b'{"entities": {"user_id": ["' + b"x" * limit + b'"]}}'
    response = client.post(PREDICT, content=body)
    assert response.status_code == 413
    assert "serving.max_body_bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(limit // 65_536 + 2):
            yield b" " * 65_536

    response = client.post(PREDICT, content=chunks())
    assert response.status_code == 413
    assert "serving.max_body_bytes" in response.json()["detail"]


def test_redis_down_answers_503(serving_settings: Settings) -> None:
    with TestClient(create_app(redis_down(serving_settings))) as client:
        response = client.post(PREDICT, json={"entities": ONE})
        assert response.status_code == 503
        assert "unreachable" in response.json()["detail"]
        response = client.post(
            "/v1/features", json={"features": ["user_txn:count_2h"], "entities": ONE}
        )
        assert response.status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert any("Redis" in reason for reason in ready.json()["reasons"])
        assert client.get("/healthz").status_code == 200


def test_kafka_down_fails_no_request(serving_settings: Settings) -> None:
    down = serving_settings.model_copy(
        update={"kafka": KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")}
    )
    with TestClient(create_app(down)) as client:
        client.app.state.serving.prediction_log.flush_s = 1.0  # shutdown gives up quickly
        for _ in range(3):
            response = client.post(PREDICT, json={"entities": {"user_id": USERS[:10]}})
            assert response.status_code == 200, response.text
    assert "fstore_prediction_log_dropped_total" in _metrics_text(client)


def _metrics_text(client: TestClient) -> str:
    from prometheus_client import generate_latest

    return generate_latest(client.app.state.serving.metrics.registry).decode()


def test_an_outage_answer_does_not_show_the_redis_password(serving_settings: Settings) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    down = serving_settings.model_copy(update={"redis": RedisSettings(url=url, namespace="x")})
    with TestClient(create_app(down)) as client:
        response = client.post(PREDICT, json={"entities": ONE})
        assert response.status_code == 503
        ready = client.get("/readyz")
        for text in (response.text, ready.text):
            assert "s3cret" not in text
            assert "redis://:***@127.0.0.1" in text
