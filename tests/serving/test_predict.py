"""Scoring end to end: features from Redis, LightGBM scores, the prediction log on Kafka."""

from __future__ import annotations

import asyncio
import gc
import math
from datetime import datetime

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from featurestore import FeatureStore
from featurestore.config import KafkaSettings, Settings
from serving.state import ServingState
from tests.serving.conftest import World, read_log

pytestmark = pytest.mark.integration


def _matrix(features: dict[str, list[float | None]], names: list[str]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in features[n]] for n in names]).T


def test_scores_equal_booster_predict_and_each_row_is_logged(
    client: TestClient, world: World, serving_settings: Settings, kafka: KafkaSettings
) -> None:
    users = ["u1", "u2", "u3", "nobody"]
    response = client.post(
        "/v1/predict/fraud", json={"entities": {"user_id": users}, "return_features": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "fraud"
    assert body["versions"] == [1, 1, 1, 1]
    assert body["aliases"] == ["production"] * 4
    matrix = _matrix(body["features"], world.names)
    # "nobody" has no event in any window: answered unscored (test_unscored.py), not logged.
    assert body["scores"][:3] == world.boosters[1].predict(matrix[:3]).tolist()
    assert body["scores"][3] is None
    assert body["statuses"] == ["scored", "scored", "scored", "unscored"]

    # The vector is what the feature store serves for the model's pinned refs.
    online = FeatureStore(serving_settings).get_online_features(
        {"user_id": users}, features=world.refs
    )
    for ref, name in zip(world.refs, world.names, strict=True):
        assert body["features"][name] == online.features[ref].values
    assert online.features[world.refs[0]].values[:3] != [0.0, 0.0, 0.0]  # real events were read

    # Known users miss only the 10-minute max (no event that recent); an unknown user also
    # misses the last amount (count and sum are 0 without events, not missing).
    assert body["missing"][:3] == [["user_txn__amount_max_10m"]] * 3
    assert sorted(body["missing"][3]) == ["user_txn__amount_last_2h", "user_txn__amount_max_10m"]

    topic = serving_settings.serving.prediction_log_topic
    records = read_log(
        kafka, topic, lambda got: sum(r["request_id"] == body["request_id"] for r in got) == 3
    )
    mine = {r["entities"]["user_id"]: r for r in records if r["request_id"] == body["request_id"]}
    assert sorted(mine) == sorted(users[:3])
    for i, user in enumerate(users[:3]):
        record = mine[user]
        assert (record["model"], record["version"], record["alias"], record["role"]) == (
            "fraud",
            1,
            "production",
            "served",
        )
        assert record["score"] == body["scores"][i]
        assert record["features"] == {n: body["features"][n][i] for n in world.names}
        assert datetime.fromisoformat(record["at"]).utcoffset() is not None


def test_request_features_replace_what_redis_gives(client: TestClient, world: World) -> None:
    response = client.post(
        "/v1/predict/fraud",
        json={
            "entities": {"user_id": ["u1", "u2"]},
            "request_features": {"user_txn__amount_last_2h": [99.0, None]},
            "return_features": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["features"]["user_txn__amount_last_2h"] == [99.0, None]
    assert "user_txn__amount_last_2h" in body["missing"][1]
    matrix = _matrix(body["features"], world.names)
    assert math.isnan(matrix[1, world.names.index("user_txn__amount_last_2h")])
    assert body["scores"] == world.boosters[1].predict(matrix).tolist()


def test_a_scalar_entity_is_one_row_and_features_stay_out_unless_asked(
    client: TestClient,
) -> None:
    body = client.post("/v1/predict/fraud", json={"entities": {"user_id": "u5"}}).json()
    assert len(body["scores"]) == 1
    assert "features" not in body


def test_features_endpoint_matches_the_store(
    client: TestClient, world: World, serving_settings: Settings
) -> None:
    entities = {"user_id": ["u1", "nobody"]}
    response = client.post("/v1/features", json={"features": world.refs, "entities": entities})
    assert response.status_code == 200, response.text
    expected = FeatureStore(serving_settings).get_online_features(entities, features=world.refs)
    assert response.json() == expected.to_dict()
    columns = response.json()["features"]
    assert columns[world.refs[3]]["statuses"] == ["missing", "missing"]


def test_concurrent_requests_each_get_their_own_scores(
    serving_settings: Settings, world: World
) -> None:
    """Requests in flight together write their reads to one pipelined connection: every
    answer must still be the one its own request would get alone, whatever the mix of sizes."""
    state = ServingState(serving_settings)
    rng = np.random.default_rng(3)
    users = [f"u{i}" for i in range(100)] + ["nobody"]
    bodies = [
        orjson.dumps({"entities": {"user_id": [str(u) for u in rng.choice(users, size)]}})
        for size in rng.choice([1, 1, 1, 2, 7, 40], 300)
    ]

    def scores(answer: bytes) -> list[float]:
        return list(orjson.loads(answer)["scores"])

    async def run() -> tuple[list[bytes], list[bytes]]:
        state.start()
        try:
            alone = [(await state.predictor.predict("fraud", b, None)).answer for b in bodies]
            together = await asyncio.gather(
                *(state.predictor.predict("fraud", body, None) for body in bodies)
            )
            return alone, [scored.answer for scored in together]
        finally:
            state.stop()

    alone, together = asyncio.run(run())
    assert [scores(a) for a in together] == [scores(a) for a in alone]
    # Swapped answers would show: requests differ in size, and users in scores.
    assert len({s for a in alone for s in scores(a)}) > 2


def test_a_single_entity_prediction_leaves_no_garbage_for_the_collector(
    serving_settings: Settings,
) -> None:
    """Objects in reference cycles outlive their request until a collection finds them, and
    collections are pauses on the request path: the hot path must leave none. (A batch goes
    through `Booster.predict`, whose ctypes pointers are LightGBM's own.)"""
    state = ServingState(serving_settings)
    bodies = [orjson.dumps({"entities": {"user_id": [user]}}) for user in ("u1", "u2", "nobody")]

    async def run() -> int:
        state.start()
        try:
            for body in bodies:  # the first requests fill caches that last
                (await state.predictor.predict("fraud", body, None)).after()
            gc.collect()
            gc.disable()
            try:
                for _ in range(20):
                    for body in bodies:
                        (await state.predictor.predict("fraud", body, None)).after()
                return gc.collect()
            finally:
                gc.enable()
        finally:
            state.stop()

    assert asyncio.run(run()) == 0


def test_request_features_are_marked_in_the_prediction_log(
    client: TestClient, world: World, serving_settings: Settings, kafka: KafkaSettings
) -> None:
    sent = world.names[2]
    fed = client.post(
        "/v1/predict/fraud",
        json={"entities": {"user_id": ["u1", "u2"]}, "request_features": {sent: [1.0, 99.0]}},
    ).json()
    plain = client.post("/v1/predict/fraud", json={"entities": {"user_id": "u3"}}).json()
    ids = {fed["request_id"], plain["request_id"]}
    topic = serving_settings.serving.prediction_log_topic
    records = read_log(kafka, topic, lambda got: sum(r["request_id"] in ids for r in got) == 3)
    marks = {
        r["entities"]["user_id"]: r.get("request_features")
        for r in records
        if r["request_id"] in ids
    }
    assert marks == {"u1": [sent], "u2": [sent], "u3": None}
