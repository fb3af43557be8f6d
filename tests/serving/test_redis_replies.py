"""Redis error replies on the request path, from a Redis of the test's own put in each state for
real: replies that refuse reads (BUSY, MASTERDOWN, LOADING) answer 503 with Retry-After and the
reply named — never 500 — by the fast path, the FastAPI route and /v1/features alike, and 200
again once the state clears; states that refuse only writes (READONLY, OOM) still serve reads.
And the server refuses to start on a Redis whose policy evicts keys, unless told to accept it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from fastapi.testclient import TestClient

from featurestore.config import RedisSettings, Settings
from featurestore.errors import ConfigError
from serving import create_app
from tests.redis_faults import OwnRedis, own_redis
from tests.serving.conftest import USERS
from tests.serving.test_fastpath import _route_only

pytestmark = pytest.mark.integration

PREDICT = "/v1/predict/fraud"
BODY = {"entities": {"user_id": USERS[:3]}}
FEATURES_BODY = {"features": ["user_txn:count_2h"], "entities": {"user_id": USERS[:3]}}


def _answers(client: TestClient) -> list[Any]:
    route = _route_only(client)
    return [
        client.post(PREDICT, json=BODY),
        route.post(PREDICT, json=BODY),
        client.post("/v1/features", json=FEATURES_BODY),
    ]


@contextmanager
def _masterdown(server: OwnRedis) -> Iterator[None]:
    server.replica_of_nothing(serve_stale=False)
    try:
        yield
    finally:
        server.master_again()


@pytest.mark.parametrize("reply", ["BUSY", "MASTERDOWN"])
def test_a_reply_refusing_reads_answers_503_with_retry_after(
    own_redis_world: tuple[OwnRedis, Settings], reply: str
) -> None:
    server, settings = own_redis_world
    state: Callable[[], AbstractContextManager[None]] = (
        server.busy if reply == "BUSY" else lambda: _masterdown(server)
    )
    with TestClient(create_app(settings)) as client:
        before = client.post(PREDICT, json=BODY).json()["scores"]
        with state():
            for response in _answers(client):
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                detail = response.json()["detail"]
                assert f"Redis at {server.url} answered {reply}" in detail, detail
        assert _metric(client, "RedisUnavailable") == 3
        after = _answers(client)
        assert [response.status_code for response in after] == [200, 200, 200]
        assert after[0].json()["scores"] == before


def test_loading_answers_503_until_the_data_set_is_in(
    own_redis_world: tuple[OwnRedis, Settings],
) -> None:
    server, settings = own_redis_world
    with TestClient(create_app(settings)) as client:
        before = client.post(PREDICT, json=BODY).json()["scores"]
    server.restart_loading(keys=40_000, delay_us=150)  # about 6 s of LOADING
    with TestClient(create_app(settings)) as client:
        for response in _answers(client):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert f"Redis at {server.url} answered LOADING" in response.json()["detail"]
        server.wait_loaded()
        after = _answers(client)
        assert [response.status_code for response in after] == [200, 200, 200]
        assert after[0].json()["scores"] == before


@pytest.mark.parametrize("refusal", ["READONLY", "OOM"])
def test_a_redis_refusing_writes_still_serves_reads(
    own_redis_world: tuple[OwnRedis, Settings], refusal: str
) -> None:
    server, settings = own_redis_world
    with TestClient(create_app(settings)) as client:
        before = client.post(PREDICT, json=BODY).json()["scores"]
        control = server.client()
        control.delete(*control.keys(f"{settings.redis.namespace}:*:c"))  # no cached folds
        if refusal == "READONLY":
            server.replica_of_nothing()
        else:
            control.config_set("maxmemory", "1")
        refused = redis_lib.ReadOnlyError if refusal == "READONLY" else redis_lib.OutOfMemoryError
        with pytest.raises(refused):
            control.set("probe", "x")  # the state is real: writes are refused
        answers = _answers(client)
        assert [response.status_code for response in answers] == [200, 200, 200]
        assert answers[0].json()["scores"] == before
        control.close()


def _metric(client: TestClient, kind: str) -> float:
    registry = client.app.state.serving.metrics.registry
    return registry.get_sample_value("fstore_errors_total", {"kind": kind, "status": "503"}) or 0.0


@pytest.mark.parametrize("allowed", [False, True])
def test_the_server_refuses_an_evicting_redis_at_start(
    serving_settings: Settings, tmp_path: Path, allowed: bool
) -> None:
    with own_redis(tmp_path, "--maxmemory-policy", "allkeys-lru") as server:
        redis = RedisSettings(url=server.url, namespace="x", allow_eviction=allowed)
        settings = serving_settings.model_copy(update={"redis": redis})
        refusal = nullcontext() if allowed else pytest.raises(ConfigError, match="allkeys-lru")
        with refusal:
            with TestClient(create_app(settings)) as client:
                assert client.get("/healthz").status_code == 200
