"""Model endpoints: reads with lineage, admin changes with their audit trail, tokens, health."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from featurestore.config import Settings
from featurestore.models import ModelRegistry
from serving import create_app
from tests.serving.conftest import ADMIN, admin_headers, with_serving

pytestmark = pytest.mark.integration


def test_reads_show_versions_rollout_and_lineage(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    assert listed == [
        {
            "name": "fraud",
            "versions": [1, 2],
            "aliases": {"production": 1},
            "traffic": {"production": 1.0},
        }
    ]
    detail = client.get("/v1/models/fraud").json()
    first, second = detail["versions"]
    assert first["dataset"]["name"] == "fraud_rows"
    assert first["views"] == {"user_txn": 1}
    assert first["features"][0].startswith("user_txn@1:")
    assert first["entity_keys"] == ["user_id"]
    assert (first["loaded"], second["loaded"]) == (True, False)  # only aliased versions load
    assert client.get("/v1/models/nope").status_code == 404
    assert client.get("/v1/models/nope/history").status_code == 404


def test_alias_changes_are_gated_audited_and_served_at_once(
    client: TestClient, serving_settings: Settings
) -> None:
    registry = ModelRegistry(serving_settings.models)
    poor = registry.get("fraud", 1)
    # A third version that scores like v1 but whose recorded AUC is poor: the gate refuses it.
    registry.register(
        "fraud",
        registry.load_text(poor),
        objective=poor.objective,
        signature=poor.signature,
        label=poor.label,
        dataset=poor.dataset,
        views=poor.views,
        params=poor.params,
        metrics={"auc": 0.1},
        primary_metric="auc",
        profile=poor.profile,
        who="tests",
    )
    url, headers = "/v1/models/fraud/aliases/production", admin_headers()
    refused = client.put(url, json={"version": 3}, headers=headers)
    assert refused.status_code == 409
    assert "promotion refused" in refused.json()["detail"]
    no_reason = client.put(url, json={"version": 3, "force": True}, headers=headers)
    assert no_reason.status_code == 422
    assert "needs a reason" in no_reason.json()["detail"]
    forced = client.put(
        url, json={"version": 3, "force": True, "reason": "hotfix"}, headers=headers
    )
    assert forced.status_code == 200, forced.text
    assert (forced.json()["from_version"], forced.json()["to_version"]) == (1, 3)
    body = client.post("/v1/predict/fraud", json={"entities": {"user_id": "u1"}}).json()
    assert body["versions"] == [3]  # this server reloaded before answering the change

    back = client.post("/v1/models/fraud/rollback", json={"reason": "bad"}, headers=headers)
    assert back.status_code == 200, back.text
    assert back.json()["to_version"] == 1
    body = client.post("/v1/predict/fraud", json={"entities": {"user_id": "u1"}}).json()
    assert body["versions"] == [1]

    history = client.get("/v1/models/fraud/history").json()
    assert [(h["action"], h["who"]) for h in history[-2:]] == [
        ("alias", "serving.admin_token"),
        ("rollback", "serving.admin_token"),
    ]
    assert history[-2]["detail"]["forced"] is True


def test_traffic_and_alias_removal(client: TestClient) -> None:
    headers = admin_headers()
    assert (
        client.put(
            "/v1/models/fraud/aliases/canary", json={"version": 2}, headers=headers
        ).status_code
        == 200
    )
    shadow_weight = client.put(
        "/v1/models/fraud/traffic", json={"weights": {"shadow": 1.0}}, headers=headers
    )
    assert shadow_weight.status_code == 422
    assert "takes no traffic weight" in shadow_weight.json()["detail"]
    unknown = client.put(
        "/v1/models/fraud/traffic", json={"weights": {"blue": 1.0}}, headers=headers
    )
    assert unknown.status_code == 422
    weights = {"production": 3, "canary": 1}
    done = client.put("/v1/models/fraud/traffic", json={"weights": weights}, headers=headers)
    assert done.status_code == 200, done.text
    assert client.get("/v1/models/fraud").json()["traffic"] == {
        "canary": 0.25,
        "production": 0.75,
    }
    busy = client.delete("/v1/models/fraud/aliases/canary", headers=headers)
    assert busy.status_code == 422
    assert "set the traffic without it first" in busy.json()["detail"]
    assert client.delete("/v1/models/fraud/aliases/blue", headers=headers).status_code == 404
    client.put("/v1/models/fraud/traffic", json={"weights": {"production": 1}}, headers=headers)
    removed = client.delete("/v1/models/fraud/aliases/canary?reason=done", headers=headers)
    assert removed.status_code == 200, removed.text
    assert client.get("/v1/models/fraud").json()["aliases"] == {"production": 1}


def test_admin_needs_a_key_with_admin_even_without_the_token(
    client: TestClient, serving_settings: Settings
) -> None:
    url, body = "/v1/models/fraud/aliases/canary", {"version": 2}
    assert client.put(url, json=body).status_code == 401
    wrong = client.put(url, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "unknown API key" in wrong.json()["detail"]

    off = with_serving(serving_settings, admin_token=None)
    with TestClient(create_app(off)) as no_admin:
        refused = no_admin.put(url, json=body, headers={"Authorization": f"Bearer {ADMIN}"})
        assert refused.status_code == 401
        assert "unknown API key" in refused.json()["detail"]
        assert "scope 'admin'" in no_admin.put(url, json=body).json()["detail"]


def test_read_token_guards_reads_but_not_probes(serving_settings: Settings) -> None:
    guarded = with_serving(serving_settings, read_token=SecretStr("reader"))
    with TestClient(create_app(guarded)) as client:
        predict = {"entities": {"user_id": "u1"}}
        assert client.get("/v1/models").status_code == 401
        assert client.post("/v1/predict/fraud", json=predict).status_code == 401
        reader = {"Authorization": "Bearer reader"}
        assert client.get("/v1/models", headers=reader).status_code == 200
        assert client.post("/v1/predict/fraud", json=predict, headers=reader).status_code == 200
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert client.get("/v1/models", headers=admin).status_code == 200
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert "models" not in ready.json()  # no model names without a key
        assert client.get("/readyz", headers=reader).json()["models"]["fraud"]
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=reader).status_code == 200


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"]["fraud"]["aliases"] == {"production": 1}
    client.post("/v1/predict/fraud", json={"entities": {"user_id": ["u1", "nobody"]}})
    client.post("/v1/predict/nope", json={"entities": {"user_id": "u1"}})
    text = client.get("/metrics").text
    assert 'fstore_predict_seconds_count{model="fraud",version="1"} 1.0' in text
    assert (  # "nobody" has no event at all: answered unscored, not counted as a prediction
        'fstore_predictions_total{alias="production",model="fraud",role="served",version="1"} 1.0'
        in text
    )
    assert 'fstore_unscored_rows_total{model="fraud",reason="all_missing"} 1.0' in text
    assert (
        'fstore_missing_features_total{feature="user_txn__amount_max_10m",model="fraud"} 2.0'
        in text
    )
    assert 'fstore_errors_total{kind="NotFound",status="404"} 1.0' in text
    assert 'route="/v1/predict/{model}"' in text
