"""A row with nothing to be scored on — no event in any window of the online store, no request
feature — is answered without a score, saying why, unless the request asks `score_missing`;
it is counted, and left out of the prediction log (no score was served). An empty Redis (the
issue's case: every entity unknown) makes every row unscored, never a column of confident
scores."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from featurestore.config import KafkaSettings, Settings
from serving import create_app
from serving.scoring import UNSCORED_REASON
from tests.redis_faults import OwnRedis
from tests.serving.conftest import World, admin_headers, read_log

pytestmark = pytest.mark.integration

PREDICT = "/v1/predict/fraud"


def test_an_entity_without_events_is_unscored_and_says_why(
    client: TestClient, world: World, serving_settings: Settings, kafka: KafkaSettings
) -> None:
    response = client.post(
        PREDICT, json={"entities": {"user_id": ["u1", "nobody"]}, "return_features": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["statuses"] == ["scored", "unscored"]
    assert body["reasons"] == [None, UNSCORED_REASON]
    assert isinstance(body["scores"][0], float) and body["scores"][1] is None
    # Its count and sum read 0, not missing: what is missing is any event at all.
    assert body["features"]["user_txn__count_2h"][1] == 0.0

    # Asked for, it is scored as the model scores that vector.
    asked = client.post(
        PREDICT,
        json={
            "entities": {"user_id": ["u1", "nobody"]},
            "score_missing": True,
            "return_features": True,
        },
    ).json()
    assert asked["statuses"] == ["scored", "scored"] and asked["reasons"] == [None, None]
    row = np.array(
        [[np.nan if v is None else v for v in (asked["features"][n][1] for n in world.names)]]
    )
    assert asked["scores"][1] == world.boosters[1].predict(row)[0]
    assert asked["scores"][0] == body["scores"][0]

    # A request feature is something to score on.
    given = client.post(
        PREDICT,
        json={
            "entities": {"user_id": "nobody"},
            "request_features": {"user_txn__amount_last_2h": 5.0},
        },
    ).json()
    assert given["statuses"] == ["scored"] and isinstance(given["scores"][0], float)
    nulls = client.post(
        PREDICT,
        json={
            "entities": {"user_id": "nobody"},
            "request_features": {"user_txn__amount_last_2h": None},
        },
    ).json()
    assert nulls["statuses"] == ["unscored"]

    metrics = client.get("/metrics").text
    assert 'fstore_unscored_rows_total{model="fraud",reason="all_missing"} 2.0' in metrics
    assert (
        'fstore_predictions_total{alias="production",model="fraud",role="served",version="1"} 4.0'
        in metrics
    )

    # The log holds the scored rows only: u1 of the first request, both rows of the second.
    topic = serving_settings.serving.prediction_log_topic
    ids = {body["request_id"], asked["request_id"]}
    records = read_log(kafka, topic, lambda got: sum(r["request_id"] in ids for r in got) >= 3)
    logged = sorted(
        (r["request_id"] == body["request_id"], r["entities"]["user_id"])
        for r in records
        if r["request_id"] in ids
    )
    assert logged == [(False, "nobody"), (False, "u1"), (True, "u1")]


def test_an_empty_redis_scores_nothing(
    own_redis_world: tuple[OwnRedis, Settings],
) -> None:
    server, settings = own_redis_world
    with TestClient(create_app(settings)) as client:
        users = [f"u{i}" for i in range(20)]
        full = client.post(PREDICT, json={"entities": {"user_id": users}}).json()
        assert full["statuses"] == ["scored"] * 20
        control = server.client()
        control.flushall()  # a Redis restarted without its data (our own server)
        control.close()
        empty = client.post(PREDICT, json={"entities": {"user_id": users}}).json()
        assert empty["statuses"] == ["unscored"] * 20
        assert empty["scores"] == [None] * 20
        assert set(empty["reasons"]) == {UNSCORED_REASON}


def test_rows_split_between_versions_are_unscored_in_their_places(client: TestClient) -> None:
    change = {"weights": {"production": 0.5, "canary": 0.5}, "reason": "test"}
    headers = admin_headers()
    assert (
        client.put(
            "/v1/models/fraud/aliases/canary", json={"version": 2}, headers=headers
        ).status_code
        == 200
    )
    assert client.put("/v1/models/fraud/traffic", json=change, headers=headers).status_code == 200
    users = [f"u{i}" if i % 3 else f"ghost{i}" for i in range(60)]
    for _ in range(100):  # until the poller has the split
        body = client.post(PREDICT, json={"entities": {"user_id": users}}).json()
        if len(set(body["aliases"])) == 2:
            break
    assert set(body["aliases"]) == {"production", "canary"}
    expected = ["scored" if i % 3 else "unscored" for i in range(60)]
    assert body["statuses"] == expected
    assert [score is None for score in body["scores"]] == [s == "unscored" for s in expected]
