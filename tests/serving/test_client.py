"""`featurestore.client` against a real `fstore serve` process: typed results, the server's
messages passing through as exceptions, the API key sent as a bearer token, keep-alive
connections reused, and a 503 (Redis frozen with SIGSTOP) asked again after its Retry-After
until the server serves."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml
from pydantic import BaseModel

from featurestore.client import (
    AsyncClient,
    BadRequest,
    Client,
    FeatureColumn,
    FeatureValues,
    ModelSummary,
    NotFound,
    Prediction,
    Unauthorized,
    Unavailable,
)
from featurestore.config import ModelsSettings, RedisSettings, Settings
from serving.schemas import (
    FeatureColumnOut,
    FeaturesResponse,
    ModelSummaryOut,
    PredictResponse,
)
from tests.redis_faults import OwnRedis, copy_keys, own_redis
from tests.serve_process import fstore_serve_process
from tests.serving.conftest import FEATURES, World

pytestmark = pytest.mark.integration

KEY = "reader-key-0123"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("result", "schema"),
    [
        (Prediction, PredictResponse),
        (FeatureValues, FeaturesResponse),
        (FeatureColumn, FeatureColumnOut),
        (ModelSummary, ModelSummaryOut),
    ],
)
def test_the_client_s_results_read_what_the_server_documents(
    result: type[BaseModel], schema: type[BaseModel]
) -> None:
    """Each field of a result is one the server answers, and each field the server always
    answers is read: the client's copy of the shapes cannot drift from serving/schemas.py."""
    assert set(result.model_fields) <= set(schema.model_fields)
    required = {name for name, field in schema.model_fields.items() if field.is_required()}
    assert required <= set(result.model_fields)


@contextmanager
def fstore_serve(settings: Settings, folder: Path) -> Iterator[str]:
    """`fstore serve` on a free port with a read key (no prediction log); its URL once ready."""
    config = folder / "featurestore.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "redis": settings.redis.model_dump(),
                "offline": {"root": str(settings.offline.root)},
                "registry": {"path": str(settings.registry.path)},
                "models": {"path": str(settings.models.path)},
                "serving": {"prediction_log_topic": "", "read_token": KEY},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env["PYTHONPATH"] = str(ROOT)
    with fstore_serve_process(config, folder / "serve.log", "--workers", "1", env=env) as url:
        yield url


@pytest.fixture(scope="module")
def served(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, OwnRedis]]:
    """One `fstore serve` for the module, on a redis-server of its own holding a copy of the
    world's keys (the tests freeze it) and a copy of the model registry."""
    root = tmp_path_factory.mktemp("client")
    shutil.copytree(world.settings.models.path, root / "models")
    with own_redis(root / "redis") as server:
        namespace = world.settings.redis.namespace
        assert copy_keys(world.settings.redis.url, f"{namespace}:*", server) > 0
        settings = world.settings.model_copy(
            update={
                "redis": RedisSettings(url=server.url, namespace=namespace),
                "models": ModelsSettings(path=root / "models"),
            }
        )
        with fstore_serve(settings, root) as url:
            yield url, server


def answered_503(url: str) -> float:
    """How many requests the server answered 503, from its own /metrics (`metrics:read`)."""
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    response.raise_for_status()
    text = response.text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fstore_errors_total{") and 'status="503"' in line
    )


def test_typed_results_and_the_key_as_a_bearer_token(
    served: tuple[str, OwnRedis], world: World
) -> None:
    url, _ = served
    with Client(url, api_key=KEY) as client:
        (model,) = client.models()
        assert model == ModelSummary(
            name="fraud", versions=[1, 2], aliases={"production": 1}, traffic={"production": 1.0}
        )
        scored = client.predict("fraud", {"user_id": ["u1", "u2", "u3"]}, return_features=True)
        assert isinstance(scored, Prediction)
        assert scored.versions == [1, 1, 1] and scored.aliases == ["production"] * 3
        assert all(isinstance(s, float) and 0 <= s <= 1 for s in scored.scores)
        assert scored.features is not None and set(scored.features) == set(world.names)
        # The same answer as the raw API gives.
        raw = httpx.post(
            f"{url}/v1/predict/fraud",
            json={"entities": {"user_id": ["u1", "u2", "u3"]}},
            headers={"Authorization": f"Bearer {KEY}"},
        ).json()
        assert scored.scores == raw["scores"]

        online = client.features(FEATURES, {"user_id": ["u1", "nobody"]})
        count = online.features["user_txn:count_2h"]
        assert online.values("user_txn:count_2h")[0] > 0
        assert count.statuses == ["ok", "missing"]
        first, none = count.event_timestamps
        assert first is not None and first.utcoffset() is not None and none is None

        for _ in range(5):  # one pooled keep-alive connection serves them all
            client.predict("fraud", {"user_id": "u4"})
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) == 1


def test_errors_carry_the_server_s_message(served: tuple[str, OwnRedis]) -> None:
    url, _ = served
    headers = {"Authorization": f"Bearer {KEY}"}
    with Client(url, api_key=KEY) as client:
        with pytest.raises(NotFound) as unknown:
            client.predict("nope", {"user_id": ["u1"]})
        raw = httpx.post(
            f"{url}/v1/predict/nope", json={"entities": {"user_id": ["u1"]}}, headers=headers
        )
        assert unknown.value.status == 404 and unknown.value.detail == raw.json()["detail"]
        assert str(unknown.value).startswith(raw.json()["detail"])
        assert "POST /v1/predict/nope answered 404" in str(unknown.value)

        with pytest.raises(BadRequest, match="user_id") as bad:
            client.predict("fraud", {"card": ["c1"]})
        assert bad.value.status == 422

    with Client(url) as anonymous, pytest.raises(Unauthorized) as refused:
        anonymous.models()
    assert refused.value.status == 401 and refused.value.detail
    assert KEY not in str(refused.value)
    with Client(url, api_key="wrong-key") as wrong, pytest.raises(Unauthorized) as refused:
        wrong.models()
    assert "wrong-key" not in str(refused.value)


def test_a_503_is_asked_again_after_retry_after_until_served(
    served: tuple[str, OwnRedis],
) -> None:
    url, redis_server = served
    before = answered_503(url)
    redis_server.pause()  # SIGSTOP: Redis frozen, reads pass the deadline
    outcome: list[Prediction | BaseException] = []

    def call() -> None:
        try:
            with Client(url, api_key=KEY, retries=60, max_retry_wait=1.0) as client:
                outcome.append(client.predict("fraud", {"user_id": ["u1", "u2"]}))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while answered_503(url) == before:  # the client was refused at least once
            assert time.monotonic() < deadline, "no 503 while Redis was frozen"
            time.sleep(0.1)
    finally:
        redis_server.resume()
    thread.join(90)
    assert not thread.is_alive()
    (result,) = outcome
    assert isinstance(result, Prediction), result
    assert result.versions == [1, 1]
    print(f"503 answers while frozen: {answered_503(url) - before:g}")


def test_spent_retries_raise_unavailable_with_the_server_s_advice(
    served: tuple[str, OwnRedis],
) -> None:
    url, redis_server = served
    redis_server.pause()
    try:
        with Client(url, api_key=KEY, retries=1) as client, pytest.raises(Unavailable) as down:
            client.predict("fraud", {"user_id": ["u1"]})
    finally:
        redis_server.resume()
    assert down.value.status == 503 and down.value.retry_after == 1.0
    assert "serving.redis_deadline_ms" in down.value.detail
    assert "retry later" in str(down.value)


def test_the_async_client_runs_calls_at_once_on_one_pool(served: tuple[str, OwnRedis]) -> None:
    url, _ = served

    async def main() -> None:
        async with AsyncClient(url, api_key=KEY, max_connections=4) as client:
            users = [f"u{i}" for i in range(20)]
            scored = await asyncio.gather(
                *(client.predict("fraud", {"user_id": user}) for user in users)
            )
            assert [s.versions for s in scored] == [[1]] * 20
            (model,) = await client.models()
            assert model.name == "fraud"
            online = await client.features(FEATURES[:1], {"user_id": ["u1"]})
            assert online.features["user_txn:count_2h"].statuses == ["ok"]
            with pytest.raises(NotFound, match="nope"):
                await client.predict("nope", {"user_id": "u1"})
            pool = client._http._transport._pool  # type: ignore[attr-defined]
            assert 1 <= len(pool.connections) <= 4

    asyncio.run(main())
