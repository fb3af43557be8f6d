"""Property-based requests from the app's own OpenAPI schema: no input makes it answer 5xx.

Run in-process (ASGI) against the world of conftest.py — real Redis, a real model — on the
predict, features, model-read and health endpoints, with data that fits the schema and data
that breaks it. Admin endpoints change state; test_admin.py covers them by hand.

(schemathesis.pytest.from_fixture would be the short way, but with pytest 9 it fails on a
removed pytest attribute, `Function._nodeid`; the strategies below are its public building
blocks.)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans

from featurestore.api_keys import KeyStore
from featurestore.config import RegistrySettings, Settings
from serving import create_app
from tests.serving.conftest import World

pytestmark = pytest.mark.integration


@pytest.fixture
def api_schema(serving_settings: Settings) -> Iterator[schemathesis.BaseSchema]:
    app = create_app(serving_settings)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()  # schemathesis ran the app's lifespan (poller, log, shadow)


_ENDPOINTS = [
    ("POST", "/v1/predict/{model}", {"model": "fraud"}),  # the scoring path itself
    ("POST", "/v1/predict/{model}", None),
    ("POST", "/v1/features", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/{name}", {"name": "fraud"}),
    ("GET", "/v1/models/{name}", None),
    ("GET", "/v1/models/{name}/history", {"name": "fraud"}),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "fixed"), _ENDPOINTS)
def test_no_input_makes_a_server_error(
    api_schema: schemathesis.BaseSchema, method: str, path: str, fixed: dict[str, Any] | None
) -> None:
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed),
        operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed),
    )

    @given(case=cases)
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def no_server_error(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=[not_a_server_error])

    no_server_error()


@pytest.fixture
def keyed_schema(
    serving_settings: Settings, tmp_path: Path
) -> Iterator[tuple[schemathesis.BaseSchema, dict[str, str]]]:
    """The app with API keys on (a registry copy holding one `admin` key, which grants every
    scope) and that key's header."""
    registry = tmp_path / "keyed-registry"
    shutil.copytree(serving_settings.registry.path, registry)
    settings = serving_settings.model_copy(update={"registry": RegistrySettings(path=registry)})
    _, secret = KeyStore(settings.registry).create("schema", ["admin"], "tests")
    yield (
        schemathesis.openapi.from_asgi("/openapi.json", create_app(settings)),
        {"Authorization": f"Bearer {secret}"},
    )
    shutdown_lifespans()


@pytest.mark.parametrize(("method", "path", "fixed"), _ENDPOINTS)
def test_no_input_makes_a_server_error_with_keys_on(
    keyed_schema: tuple[schemathesis.BaseSchema, dict[str, str]],
    method: str,
    path: str,
    fixed: dict[str, Any] | None,
) -> None:
    api_schema, headers = keyed_schema
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed),
        operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed),
    )

    @given(case=cases, keyed=st.booleans())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def no_server_error(case: schemathesis.Case, keyed: bool) -> None:
        # With the key, or with whatever Authorization the case itself carries.
        if keyed:
            others = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            case.headers = {**others, **headers}
        response = case.call_and_validate(checks=[not_a_server_error])
        if keyed:
            assert response.status_code not in (401, 403), response.text

    no_server_error()


# Bodies the schema allows whose entities use the model's join key, so that cases reach the
# scoring path (random keys stop at "needs entity keys ['user_id']").
_values = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1))
_numbers = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers())


@st.composite
def _scoring_bodies(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    rows = draw(st.integers(1, 40))
    users = draw(st.lists(_values, min_size=rows, max_size=rows))
    given_names = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    body: dict[str, Any] = {"entities": {"user_id": users if rows > 1 else users[0]}}
    if given_names:
        body["request_features"] = {
            name: draw(st.lists(_numbers, min_size=rows, max_size=rows)) for name in given_names
        }
    body["return_features"] = draw(st.booleans())
    return body


def test_scoring_bodies_answer_a_score_per_row(
    api_schema: schemathesis.BaseSchema, world: World
) -> None:
    operation = api_schema["/v1/predict/{model}"]["POST"]
    cases = _scoring_bodies(world.names).flatmap(
        lambda body: operation.as_strategy(path_parameters={"model": "fraud"}, body=body)
    )
    # Without ?alias= (a random alias is a 404, covered above): the traffic split scores.
    cases = cases.filter(lambda case: "alias" not in (case.query or {}))

    @given(case=cases)
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def scores(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=[not_a_server_error])
        assert response.status_code == 200, response.text
        users = case.body["entities"]["user_id"]
        rows = len(users) if isinstance(users, list) else 1
        assert len(response.json()["scores"]) == rows

    scores()
