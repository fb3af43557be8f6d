"""API keys on the scoring API, against the real world of conftest.py (Redis, Kafka, models).

The scope matrix is generated from the app's own routes: every route is either in
`serving.auth.OPEN_ROUTES` or answers 401 without a key, 403 with a key lacking its scope and
neither with the right one; a new route without a rule (or without a sample here) fails it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from featurestore.api_keys import KeyStore
from featurestore.config import RegistrySettings, Settings
from serving import create_app
from serving.auth import OPEN_ROUTES
from tests.serving.conftest import with_serving

pytestmark = pytest.mark.integration

ENTITIES = {"user_id": ["u1", "u2"]}
# One request per guarded route: (path filled in, JSON body or None).
SAMPLES: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", "/v1/predict/{model}"): ("/v1/predict/fraud", {"entities": ENTITIES}),
    ("POST", "/v1/features"): (
        "/v1/features",
        {"features": ["user_txn:count_2h"], "entities": ENTITIES},
    ),
    ("GET", "/v1/models"): ("/v1/models", None),
    ("GET", "/v1/models/{name}"): ("/v1/models/fraud", None),
    ("GET", "/v1/models/{name}/history"): ("/v1/models/fraud/history", None),
    ("PUT", "/v1/models/{name}/aliases/{alias}"): (
        "/v1/models/fraud/aliases/canary",
        {"version": 2},
    ),
    ("DELETE", "/v1/models/{name}/aliases/{alias}"): ("/v1/models/fraud/aliases/canary", None),
    ("POST", "/v1/models/{name}/rollback"): (
        "/v1/models/fraud/rollback",
        {"alias": "production", "reason": "matrix"},
    ),
    ("PUT", "/v1/models/{name}/traffic"): (
        "/v1/models/fraud/traffic",
        {"weights": {"production": 1}},
    ),
    ("GET", "/v1/drift"): ("/v1/drift", None),
    ("GET", "/metrics"): ("/metrics", None),
    ("GET", "/ui/api/overview"): ("/ui/api/overview", None),
    ("GET", "/ui/api/drift"): ("/ui/api/drift", None),
}
# The scope each guarded route needs for its sample (a route's own rule says it; this is the
# test's independent statement of it).
NEEDED = {
    ("POST", "/v1/predict/{model}"): "predict:fraud",
    ("POST", "/v1/features"): "features:*",
    ("GET", "/v1/models"): "models:read",
    ("GET", "/v1/models/{name}"): "models:read",
    ("GET", "/v1/models/{name}/history"): "models:read",
    ("PUT", "/v1/models/{name}/aliases/{alias}"): "admin",
    ("DELETE", "/v1/models/{name}/aliases/{alias}"): "admin",
    ("POST", "/v1/models/{name}/rollback"): "admin",
    ("PUT", "/v1/models/{name}/traffic"): "admin",
    ("GET", "/v1/drift"): "drift:read",
    ("GET", "/metrics"): "metrics:read",
    ("GET", "/ui/api/overview"): "models:read",
    ("GET", "/ui/api/drift"): "drift:read",
}
SCOPES = sorted(set(NEEDED.values()))


@dataclass
class Keyed:
    settings: Settings
    store: KeyStore
    secrets: dict[str, str]  # key name -> secret

    def bearer(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[name]}"}

    def create(self, name: str, *scopes: str, **options: Any) -> dict[str, str]:
        _, self.secrets[name] = self.store.create(name, scopes, "tests", **options)
        return self.bearer(name)


@pytest.fixture
def keyed(serving_settings: Settings, tmp_path: Path) -> Keyed:
    """The serving settings with a registry copy of this test's own holding a key per scope
    (named like the scope, ':' and '*' spelled out), no deprecated token, quick key refresh."""
    registry = tmp_path / "registry"
    shutil.copytree(serving_settings.registry.path, registry)
    settings = with_serving(
        serving_settings.model_copy(update={"registry": RegistrySettings(path=registry)}),
        admin_token=None,
        keys_refresh_s=0.1,
    )
    keyed = Keyed(settings, KeyStore(settings.registry), {})
    for scope in SCOPES:
        keyed.create(_key_name(scope), scope)
    return keyed


def _key_name(scope: str) -> str:
    return "k-" + scope.replace(":", "-").replace("*", "all")


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, as FastAPI resolves its included routers."""
    found = set()
    for route in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        methods = getattr(route, "methods", None) or ()
        found.update((m, route.path) for m in methods if m != "HEAD" and route.path)
    return sorted(found)


def _call(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.request(method, path, json=body, headers=headers)


def test_every_route_has_a_rule_and_the_matrix_holds(keyed: Keyed) -> None:
    with TestClient(create_app(keyed.settings)) as client:
        routes = _routes(client)
        assert set(routes) == set(SAMPLES) | OPEN_ROUTES, "a route without a rule here"
        for method, path in routes:
            if (method, path) in OPEN_ROUTES:
                continue
            url, body = SAMPLES[method, path]
            needed = NEEDED[method, path]

            anonymous = _call(client, method, url, body, {})
            # A route with no Guard answers something else here: it has no access rule.
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert needed in anonymous.json()["detail"]
            assert anonymous.headers["WWW-Authenticate"] == "Bearer"

            wrong_scope = "models:read" if needed != "models:read" else "drift:read"
            wrong = _call(client, method, url, body, keyed.bearer(_key_name(wrong_scope)))
            assert wrong.status_code == 403, (method, path, wrong.text)
            assert f"lacks the scope {needed!r}" in wrong.json()["detail"]

            right = _call(client, method, url, body, keyed.bearer(_key_name(needed)))
            assert right.status_code not in (401, 403, 500), (method, path, right.text)

            admin = _call(client, method, url, body, keyed.bearer("k-admin"))
            assert admin.status_code not in (401, 403, 500), (method, path, admin.text)

        for method, path in sorted(OPEN_ROUTES):
            url = path.replace("{name}", "app.js")
            assert _call(client, method, url, None, {}).status_code == 200, (method, path)


def test_model_and_service_scopes_are_per_name(keyed: Keyed) -> None:
    other = keyed.create("other-model", "predict:spend")
    named = keyed.create("named", "features:fraud_service")
    with TestClient(create_app(keyed.settings)) as client:
        refused = client.post("/v1/predict/fraud", json={"entities": ENTITIES}, headers=other)
        assert refused.status_code == 403
        assert "'predict:fraud'" in refused.json()["detail"]
        # Refs outside any service need features:*; a named service scope does not cover them.
        refs = {"features": ["user_txn:count_2h"], "entities": ENTITIES}
        by_refs = client.post("/v1/features", json=refs, headers=named)
        assert by_refs.status_code == 403 and "'features:*'" in by_refs.json()["detail"]
        service = {"feature_service": "fraud_service", "entities": ENTITIES}
        allowed = client.post("/v1/features", json=service, headers=named)
        assert allowed.status_code == 422  # past the key: the registry has no such service
        assert "fraud_service" in allowed.json()["detail"]
        elsewhere = {"feature_service": "spend_service", "entities": ENTITIES}
        assert client.post("/v1/features", json=elsewhere, headers=named).status_code == 403


def test_unknown_expired_and_revoked_keys_are_401_saying_which(keyed: Keyed) -> None:
    soon = keyed.create("soon", "predict:*", expires_at=datetime.now(UTC) + timedelta(seconds=1))
    doomed = keyed.create("doomed", "predict:*")
    body = {"entities": ENTITIES}
    with TestClient(create_app(keyed.settings)) as client:
        unknown = client.post("/v1/predict/fraud", json=body, headers={"Authorization": "Bearer x"})
        assert unknown.status_code == 401 and "unknown API key" in unknown.json()["detail"]
        assert client.post("/v1/predict/fraud", json=body, headers=doomed).status_code == 200

        while client.post("/v1/predict/fraud", json=body, headers=soon).status_code == 200:
            time.sleep(0.1)  # until its expiry passes
        expired = client.post("/v1/predict/fraud", json=body, headers=soon)
        assert expired.status_code == 401
        assert "API key 'soon' expired at" in expired.json()["detail"]

        keyed.store.revoke("doomed", "tests")
        revoked_at = time.monotonic()
        bound = keyed.settings.serving.keys_refresh_s
        while client.post("/v1/predict/fraud", json=body, headers=doomed).status_code == 200:
            assert time.monotonic() - revoked_at < 60, "the revocation never took effect"
            time.sleep(0.02)
        took = time.monotonic() - revoked_at
        after = client.post("/v1/predict/fraud", json=body, headers=doomed)
        assert after.status_code == 401 and "'doomed' is revoked" in after.json()["detail"]
        # The bound (keys_refresh_s) is what the docs promise; printed, never a failing timing.
        print(f"revocation took effect after {took:.2f} s (refresh every {bound} s)")
        for response in (unknown, expired, after):
            assert keyed.secrets["doomed"] not in response.text


def test_audit_who_is_the_key_name_never_a_header(keyed: Keyed) -> None:
    carol = keyed.create("carol", "admin")
    with TestClient(create_app(keyed.settings)) as client:
        headers = {**carol, "X-Actor": "mallory"}
        done = client.put("/v1/models/fraud/aliases/canary", json={"version": 2}, headers=headers)
        assert done.status_code == 200, done.text
        assert done.json()["who"] == "carol"
        traffic = {"weights": {"production": 3, "canary": 1}}
        assert client.put("/v1/models/fraud/traffic", json=traffic, headers=headers).is_success
        history = client.get("/v1/models/fraud/history", headers=carol).json()
    assert [(h["action"], h["who"]) for h in history[-2:]] == [
        ("alias", "carol"),
        ("traffic", "carol"),
    ]


def test_rate_limit_per_key_answers_429_with_retry_after(keyed: Keyed) -> None:
    slow = keyed.create("slow", "predict:*", rate_per_s=0.2, burst=2)
    body = {"entities": ENTITIES}
    with TestClient(create_app(keyed.settings)) as client:
        for _ in range(2):
            assert client.post("/v1/predict/fraud", json=body, headers=slow).status_code == 200
        limited = client.post("/v1/predict/fraud", json=body, headers=slow)
        assert limited.status_code == 429, limited.text
        assert 1 <= int(limited.headers["Retry-After"]) <= 5
        assert "over its rate of 0.2 requests per second" in limited.json()["detail"]
        # One bucket per key, whichever way in (this one goes through FastAPI); the rate is
        # checked before the scope. Other keys go on.
        assert client.get("/v1/models", headers=slow).status_code == 429
        other = keyed.bearer("k-predict-fraud")
        assert client.post("/v1/predict/fraud", json=body, headers=other).status_code == 200
        metrics = client.get("/metrics", headers=keyed.bearer("k-metrics-read")).text
        assert 'fstore_errors_total{kind="RateLimited",status="429"}' in metrics


def test_readyz_names_models_only_to_a_key(keyed: Keyed) -> None:
    with TestClient(create_app(keyed.settings)) as client:
        anonymous = client.get("/readyz")
        assert anonymous.status_code == 200
        assert "fraud" not in anonymous.text and "production" not in anonymous.text
        assert client.get("/healthz").json() == {"status": "ok"}
        wrong = client.get("/readyz", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 200 and "fraud" not in wrong.text
        shown = client.get("/readyz", headers=keyed.bearer("k-models-read")).json()
        assert shown["models"]["fraud"]["aliases"] == {"production": 1}


def test_no_keys_means_open_reads_and_admin_still_needs_a_key(
    serving_settings: Settings, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(serving_settings.registry.path, registry)
    settings = with_serving(
        serving_settings.model_copy(update={"registry": RegistrySettings(path=registry)}),
        admin_token=None,
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/predict/fraud", json={"entities": ENTITIES}).status_code == 200
        assert client.get("/v1/models").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.get("/readyz").json()["models"]["fraud"]
        refused = client.put("/v1/models/fraud/aliases/canary", json={"version": 2})
        assert refused.status_code == 401 and "scope 'admin'" in refused.json()["detail"]
