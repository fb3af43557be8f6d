"""On-demand features served: a model trained on a request-time feature (its request field a
column of the label rows) scores `/v1/predict` requests that carry the field in `request`, with
the feature computed as in training; `/v1/features` computes it too; a missing field is a 422
naming it, a failing function a 500 naming the feature. Real Kafka (import), Redis and log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from featurestore import FeatureStore, Registry, load_repo
from featurestore.config import (
    KafkaSettings,
    ModelsSettings,
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    ServingSettings,
    Settings,
)
from serving import create_app
from streaming.ingest.importer import import_events
from tests.redis_target import client_of, delete_matching

pytestmark = pytest.mark.integration

REPO = """
import numpy as np
from featurestore import (Aggregation, Entity, FeatureView, KafkaSource, RequestSource,
                          on_demand_feature)

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(name="txns", topic="{topic}", timestamp_field="ts",
                   schema={{"user_id": "string", "amount": "float64"}})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
    aggregations=[Aggregation(column="amount", function="mean", windows=["2h"]),
                  Aggregation(function="count", windows=["2h"])])
txn = RequestSource(name="txn", schema={{"amount": "float64"}})

@on_demand_feature(request=[txn], features=["user_txn:amount_mean_2h"],
                   outputs={{"amount_vs_mean": "float64"}})
def amount_vs_mean(inputs):
    if (inputs["amount"] < 0).any():
        raise ValueError("a negative amount")
    return {{"amount_vs_mean": inputs["amount"] / inputs["amount_mean_2h"]}}
"""
FEATURES = ["user_txn:count_2h", "amount_vs_mean:amount_vs_mean"]
USERS = [f"u{i}" for i in range(40)]


@pytest.fixture(scope="module")
def served(
    kafka: KafkaSettings, redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, lgb.Booster]]:
    root = tmp_path_factory.mktemp("on-demand-world")
    namespace = f"test-od-serving-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=kafka,
        redis=RedisSettings(url=redis, namespace=namespace),
        offline=OfflineSettings(root=root / "offline"),
        registry=RegistrySettings(path=root / "registry"),
        models=ModelsSettings(path=root / "models"),
        serving=ServingSettings(reload_interval_s=0.1, max_batch=1000),
    )
    (root / "repo").mkdir()
    (root / "repo" / "features.py").write_text(REPO.format(topic=f"txns-{namespace}"))
    registry = Registry(settings.registry)
    registry.apply(load_repo(root / "repo"))
    rng = np.random.default_rng(5)
    now = datetime.now(UTC)
    events = [
        {
            "user_id": USERS[i % len(USERS)],
            "amount": float(rng.uniform(10, 100)),
            "ts": now - timedelta(minutes=50) + timedelta(seconds=int(rng.integers(0, 30 * 60))),
        }
        for i in range(400)
    ]
    pq.write_table(pa.Table.from_pylist(events), root / "events.parquet")
    report = import_events(
        settings, registry.get_view("user_txn"), root / "events.parquet", online=True
    )
    assert report.imported == len(events), report.rejected
    # The label depends on the request-only amount against the user's mean: only the
    # on-demand feature can learn it.
    rows = []
    for i in range(600):
        at = now - timedelta(minutes=45) + timedelta(seconds=int(rng.integers(0, 30 * 60)))
        amount = float(rng.uniform(5, 400))
        rows.append(
            {
                "user_id": USERS[i % len(USERS)],
                "event_timestamp": at,
                "amount": amount,
                "is_fraud": int(amount > 150),
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), root / "labels.parquet")
    store = FeatureStore(settings)
    dataset = store.create_dataset("od_rows", root / "labels.parquet", features=FEATURES)
    assert dataset.manifest["on_demand"]["amount_vs_mean"]["version"] == 1
    model = store.train_model(
        "od_rows", "od", "is_fraud", {"num_iterations": 20, "num_leaves": 4}, who="tests"
    )
    assert [s.ref for s in model.signature.features] == [
        "user_txn@1:count_2h",
        "amount_vs_mean@1:amount_vs_mean",
    ]
    assert model.metrics["auc"] > 0.9  # learnt from the request-time feature
    store.models.set_alias("od", "production", model.version, who="tests")
    booster = lgb.Booster(model_str=store.models.load_text(model))
    store.online.close()
    yield settings, booster
    delete_matching(client_of(redis), f"{namespace}:*")


@pytest.fixture
def client(served: tuple[Settings, lgb.Booster]) -> Iterator[TestClient]:
    with TestClient(create_app(served[0])) as test_client:
        yield test_client


def test_predict_computes_the_feature_from_the_request(
    served: tuple[Settings, lgb.Booster], client: TestClient
) -> None:
    settings, booster = served
    users, amounts = USERS[:5], [20.0, 500.0, 60.0, 300.0, None]
    answer = client.post(
        "/v1/predict/od",
        json={
            "entities": {"user_id": users},
            "request": {"amount": amounts},
            "return_features": True,
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    online = FeatureStore(settings).get_online_features(
        {"user_id": users}, features=FEATURES, request={"amount": amounts}
    )
    matrix = np.column_stack(
        [np.array(online.features[ref].values, dtype=np.float64) for ref in FEATURES]
    )
    served_ratio = body["features"]["amount_vs_mean__amount_vs_mean"]
    assert served_ratio == online.features["amount_vs_mean:amount_vs_mean"].values
    assert served_ratio[4] is None  # no amount: missing, as LightGBM was trained to take it
    assert body["scores"] == pytest.approx(booster.predict(matrix).tolist(), rel=1e-12)
    # One row goes through the single-row scorer: the same feature, the same score.
    one = client.post(
        "/v1/predict/od", json={"entities": {"user_id": "u1"}, "request": {"amount": 500.0}}
    )
    assert one.status_code == 200, one.text
    assert one.json()["scores"][0] == pytest.approx(body["scores"][1], rel=1e-9)


def test_features_route_computes_it(
    served: tuple[Settings, lgb.Booster], client: TestClient
) -> None:
    answer = client.post(
        "/v1/features",
        json={
            "features": ["amount_vs_mean:amount_vs_mean"],
            "entities": {"user_id": ["u1", "nobody"]},
            "request": {"amount": [50.0, 50.0]},
        },
    )
    assert answer.status_code == 200, answer.text
    column = answer.json()["features"]["amount_vs_mean:amount_vs_mean"]
    assert column["statuses"] == ["ok", "missing"]  # nobody has no mean: NaN, missing
    assert column["values"][0] > 0


def test_errors_name_the_field_or_the_feature(client: TestClient) -> None:
    missing = client.post("/v1/predict/od", json={"entities": {"user_id": ["u1"]}})
    assert missing.status_code == 422
    assert "needs request field 'amount'" in missing.json()["detail"]
    typed = client.post(
        "/v1/predict/od", json={"entities": {"user_id": ["u1"]}, "request": {"amount": ["x"]}}
    )
    assert typed.status_code == 422
    assert "request field 'amount'" in typed.json()["detail"]
    failing = client.post(
        "/v1/predict/od", json={"entities": {"user_id": ["u1"]}, "request": {"amount": [-1.0]}}
    )
    assert failing.status_code == 500
    assert failing.json() == {
        "detail": "on-demand feature 'amount_vs_mean' failed: ValueError: a negative amount"
    }
    short = client.post(
        "/v1/features",
        json={
            "features": ["amount_vs_mean:amount_vs_mean"],
            "entities": {"user_id": ["u1", "u2"]},
            "request": {"amount": [1.0]},
        },
    )
    assert short.status_code == 422
    assert "request['amount'] has 1 values for 2 rows" in short.json()["detail"]
