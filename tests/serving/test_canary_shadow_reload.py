"""Canary split, sticky entities, hot reload under load, and shadow scoring — on a real app,
Redis and Kafka."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest
from fastapi.testclient import TestClient

from featurestore.config import KafkaSettings, RedisSettings, Settings
from featurestore.models import ModelRegistry
from featurestore.online import OnlineStore
from featurestore.services import free_port
from tests.serving.conftest import USERS, World, admin_headers, read_log

pytestmark = pytest.mark.integration


def _predict(client: TestClient, users: list[str], **extra: object) -> dict:
    response = client.post("/v1/predict/fraud", json={"entities": {"user_id": users}, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_canary_takes_its_share_and_each_entity_keeps_its_version(client: TestClient) -> None:
    headers = admin_headers()
    response = client.put("/v1/models/fraud/aliases/canary", json={"version": 2}, headers=headers)
    assert response.status_code == 200, response.text
    weights = {"production": 0.9, "canary": 0.1}
    response = client.put("/v1/models/fraud/traffic", json={"weights": weights}, headers=headers)
    assert response.status_code == 200, response.text

    users = [f"entity-{i}" for i in range(10_000)]
    version_of: dict[str, int] = {}
    for start in range(0, len(users), 1000):
        batch = users[start : start + 1000]
        body = _predict(client, batch)
        assert {(a, v) for a, v in zip(body["aliases"], body["versions"], strict=True)} <= {
            ("production", 1),
            ("canary", 2),
        }
        version_of.update(zip(batch, body["versions"], strict=True))
    on_canary = sum(v == 2 for v in version_of.values())
    n, p = len(users), 0.1
    assert abs(on_canary - n * p) <= 4 * math.sqrt(n * p * (1 - p)), on_canary

    # Sticky: the same entities, in another order and other company, meet the same versions.
    again = random.Random(3).sample(users, 1000)
    body = _predict(client, again)
    assert body["versions"] == [version_of[u] for u in again]


def test_hot_reload_under_load_fails_no_request(
    client: TestClient, serving_settings: Settings
) -> None:
    """Another process (the CLI, another replica) moves production 1 -> 2, then splits traffic;
    the server follows by polling, while requests keep coming."""
    registry = ModelRegistry(serving_settings.models)
    failures: list[str] = []
    seen: list[tuple[int, ...]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            response = client.post("/v1/predict/fraud", json={"entities": {"user_id": USERS}})
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text}")
            else:
                seen.append(tuple(sorted(set(response.json()["versions"]))))

    def wait_for(versions: tuple[int, ...]) -> None:
        deadline = time.monotonic() + 30  # a bound on a hang, not a timing being tested
        while versions not in seen:
            assert time.monotonic() < deadline, f"never saw versions {versions}: {set(seen)}"
            time.sleep(0.05)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_for((1,))
        registry.set_alias("fraud", "production", 2, who="tests", force=True, reason="reload test")
        wait_for((2,))
        registry.set_alias("fraud", "canary", 1, who="tests")
        registry.set_traffic("fraud", {"production": 0.5, "canary": 0.5}, who="tests")
        wait_for((1, 2))
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    # One atomic swap each time: 1 only, then 2 only, then the split — never back.
    first_on_two, split_at = seen.index((2,)), seen.index((1, 2))
    assert set(seen[:first_on_two]) == {(1,)}
    assert set(seen[first_on_two:split_at]) == {(2,)}
    assert set(seen[split_at:]) == {(1, 2)}  # the same 100 users: the same split each time


def test_shadow_scores_are_logged_and_the_response_is_untouched(
    client: TestClient, world: World, serving_settings: Settings, kafka: KafkaSettings
) -> None:
    users = USERS[:10]
    before = _predict(client, users)
    response = client.put(
        "/v1/models/fraud/aliases/shadow", json={"version": 2}, headers=admin_headers()
    )
    assert response.status_code == 200, response.text
    after = _predict(client, users, return_features=True)
    assert after["scores"] == before["scores"]
    assert after["versions"] == [1] * 10 and after["aliases"] == ["production"] * 10

    request_id = after["request_id"]
    records = read_log(
        kafka,
        serving_settings.serving.prediction_log_topic,
        lambda got: sum(r["request_id"] == request_id and r["role"] == "shadow" for r in got) == 10,
    )
    shadow = {
        r["entities"]["user_id"]: r
        for r in records
        if r["request_id"] == request_id and r["role"] == "shadow"
    }
    assert sorted(shadow) == sorted(users)
    for i, user in enumerate(users):
        record = shadow[user]
        assert (record["version"], record["alias"]) == (2, "shadow")
        vector = [after["features"][n][i] for n in world.names]
        assert record["features"] == dict(zip(world.names, vector, strict=True))
        floats = [[math.nan if v is None else v for v in vector]]
        assert record["score"] == world.boosters[2].predict(floats).tolist()[0]


def test_a_failing_shadow_changes_no_response(client: TestClient) -> None:
    state = client.app.state.serving
    # The shadow scorer alone reads from a Redis that is not there.
    state.shadow.online = OnlineStore(
        RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", namespace="nowhere")
    )
    before = _predict(client, USERS[:5])
    response = client.put(
        "/v1/models/fraud/aliases/shadow", json={"version": 2}, headers=admin_headers()
    )
    assert response.status_code == 200, response.text
    for _ in range(5):
        assert _predict(client, USERS[:5])["scores"] == before["scores"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = client.get("/metrics").text
        if 'fstore_shadow_dropped_total{reason="error"}' in metrics:
            break
        time.sleep(0.1)
    assert 'fstore_shadow_dropped_total{reason="error"}' in metrics
