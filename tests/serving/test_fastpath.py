"""The predict fast path answers exactly as the FastAPI route does, and takes nothing else.

Every request is sent twice to one app (one state, one Redis, one model): through the app, where
the fast path answers `POST /v1/predict/{model}`, and through FastAPI alone (its `__call__`,
which the fast path stands in front of). Statuses, headers, bodies and metric counts must match.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.types import Message, Receive, Scope, Send

from featurestore.config import Settings
from serving import create_app
from serving.fastpath import PredictFastPath
from tests.serving.conftest import ADMIN, USERS, redis_down, with_serving

pytestmark = pytest.mark.integration

PREDICT = "/v1/predict/fraud"
ONE = {"user_id": ["u1"]}
# What a request leaves in the metrics, whichever way it came in (timings aside).
COUNTED = (
    "fstore_http_request_seconds_count",
    "fstore_predict_seconds_count",
    "fstore_predictions_total",
    "fstore_errors_total",
    "fstore_missing_features_total",
)
Request = Callable[[], dict[str, Any]]  # httpx keywords; a fresh body each call (generators)
CHUNKED = 1_048_576  # bytes of the chunked body: at least serving.max_body_bytes


class Counting:
    """The app's fast path, counting the requests it answers."""

    def __init__(self, inner: PredictFastPath) -> None:
        self.inner = inner
        self.answered = 0

    def takes(self, scope: Scope) -> bool:
        return self.inner.takes(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.answered += 1
        await self.inner(scope, receive, send)


@pytest.fixture
def fast(client: TestClient) -> Counting:
    counting = Counting(client.app.fast_path)
    client.app.fast_path = counting
    return counting


def _route_only(client: TestClient, **options: Any) -> TestClient:
    """A client of the same app whose requests skip the fast path: FastAPI alone."""
    return TestClient(functools.partial(FastAPI.__call__, client.app), **options)


def _counts(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    counts = {}
    for metric in client.app.state.serving.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name in COUNTED:
                counts[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return counts


def _delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    """The counts that moved."""
    moved = {key: value - before.get(key, 0.0) for key, value in after.items()}
    return {key: value for key, value in moved.items() if value}


def _same_answer(
    app: TestClient, route: TestClient, path: str, request: Request
) -> tuple[Any, dict[Any, float], dict[Any, float]]:
    """Send one request both ways; check they answer alike; the fast answer and metric deltas."""
    start = _counts(app)
    fast = app.post(path, **request())
    middle = _counts(app)
    slow = route.post(path, **request())
    end = _counts(app)
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    assert fast.headers.multi_items() == slow.headers.multi_items()
    fast_body, slow_body = fast.content, slow.content
    if fast.status_code == 200:
        fast_json, slow_json = fast.json(), slow.json()
        for body in (fast_json, slow_json):
            assert re.fullmatch(r"[0-9a-f]{32}", body.pop("request_id"))
        assert fast_json == slow_json
    else:
        assert fast_body == slow_body
    return fast, _delta(start, middle), _delta(middle, end)


def _json(body: Any, **extra: Any) -> Request:
    return lambda: {"json": body, **extra}


def _chunks(total: int) -> Request:
    def body() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(total // 65_536 + 2):
            yield b" " * 65_536

    return lambda: {"content": body()}


CASES: list[tuple[str, str, Request, int]] = [
    ("one entity", PREDICT, _json({"entities": {"user_id": "u1"}}), 200),
    (
        "features asked, an unknown user",
        PREDICT,
        _json({"entities": {"user_id": ["u1", "u2", "nobody"]}, "return_features": True}),
        200,
    ),
    (
        "request features",
        PREDICT,
        _json(
            {
                "entities": {"user_id": ["u1", "u2"]},
                "request_features": {"user_txn__amount_last_2h": [99.0, None]},
                "return_features": True,
            }
        ),
        200,
    ),
    ("a batch scored in a thread", PREDICT, _json({"entities": {"user_id": USERS[:40]}}), 200),
    ("alias asked", PREDICT + "?alias=production", _json({"entities": ONE}), 200),
    (
        "the last alias wins",
        PREDICT + "?alias=blue&x=1&alias=production",
        _json({"entities": ONE}),
        200,
    ),
    ("unknown model", "/v1/predict/nope", _json({"entities": ONE}), 404),
    ("unknown alias", PREDICT + "?alias=blue", _json({"entities": ONE}), 404),
    ("empty alias", PREDICT + "?alias=", _json({"entities": ONE}), 404),
    ("invalid JSON", PREDICT, lambda: {"content": b'{"entities": '}, 422),
    ("empty body", PREDICT, lambda: {"content": b""}, 422),
    ("unknown field", PREDICT, _json({"entities": ONE, "as_of": "now"}), 422),
    ("missing entity key", PREDICT, _json({"entities": {"card": [1]}}), 422),
    ("float entity", PREDICT, _json({"entities": {"user_id": [1.5]}}), 422),
    ("too many rows", PREDICT, _json({"entities": {"user_id": USERS * 11}}), 413),
    ("chunked body over the limit", PREDICT, _chunks(CHUNKED), 413),
]


@pytest.mark.parametrize(
    ("path", "request_", "status"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_fast_path_and_route_answer_alike(
    client: TestClient, fast: Counting, path: str, request_: Request, status: int
) -> None:
    assert client.app.state.serving.config.max_body_bytes <= CHUNKED
    response, fast_delta, slow_delta = _same_answer(client, _route_only(client), path, request_)
    assert response.status_code == status, response.text
    assert fast.answered == 1
    assert fast_delta == slow_delta
    latency = [k for k in fast_delta if k[0] == "fstore_http_request_seconds_count"]
    assert latency == [
        (
            "fstore_http_request_seconds_count",
            (("method", "POST"), ("route", "/v1/predict/{model}"), ("status", str(status))),
        )
    ]
    if status == 200:
        assert any(k[0] == "fstore_predict_seconds_count" for k in fast_delta)
    else:
        assert any(k[0] == "fstore_errors_total" for k in fast_delta)


def test_a_declared_length_over_the_limit_is_refused_alike(
    client: TestClient, fast: Counting
) -> None:
    limit = client.app.state.serving.config.max_body_bytes
    body = b'{"entities": {"user_id": ["' + b"x" * limit + b'"]}}'
    response, fast_delta, slow_delta = _same_answer(
        client, _route_only(client), PREDICT, lambda: {"content": body}
    )
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert "serving.max_body_bytes" in response.json()["detail"]
    # FastAPI refuses it in a middleware, before routing: its latency has no route. The fast
    # path knows the route; every other count is the same.
    route_label = {k: v for k, v in fast_delta.items() if k[0].startswith("fstore_http")}
    assert list(route_label) == [
        (
            "fstore_http_request_seconds_count",
            (("method", "POST"), ("route", "/v1/predict/{model}"), ("status", "413")),
        )
    ]
    assert [k for k in slow_delta if k[0].startswith("fstore_http")] == [
        (
            "fstore_http_request_seconds_count",
            (("method", "POST"), ("route", "unmatched"), ("status", "413")),
        )
    ]

    def others(delta: dict[Any, float]) -> dict[Any, float]:
        return {k: v for k, v in delta.items() if not k[0].startswith("fstore_http")}

    assert (
        others(fast_delta)
        == others(slow_delta)
        == {("fstore_errors_total", (("kind", "BodyTooLarge"), ("status", "413"))): 1.0}
    )


def test_the_read_token_is_checked_alike(serving_settings: Settings) -> None:
    guarded = with_serving(serving_settings, read_token=SecretStr("reader"))
    with TestClient(create_app(guarded)) as client:
        route = _route_only(client)
        for headers, status in [
            ({}, 401),
            ({"Authorization": "Bearer nope"}, 401),
            ({"Authorization": "Basic cmVhZGVyOg=="}, 401),
            ({"Authorization": "Bearer"}, 401),
            ({"Authorization": "Bearer reader"}, 200),
            ({"Authorization": "bearer  reader "}, 200),
            ({"Authorization": f"Bearer {ADMIN}"}, 200),
        ]:
            request = _json({"entities": ONE}, headers=headers)
            response, fast_delta, slow_delta = _same_answer(client, route, PREDICT, request)
            assert response.status_code == status, (headers, response.text)
            assert fast_delta == slow_delta
            if status == 401:
                assert response.headers["www-authenticate"] == "Bearer"
                assert "API key" in response.json()["detail"]
        # A body over the limit is refused before the token is looked at, both ways.
        limit = client.app.state.serving.config.max_body_bytes
        big = b"x" * (limit + 1)
        response, _, _ = _same_answer(client, route, PREDICT, lambda: {"content": big})
        assert response.status_code == 413


def test_redis_down_answers_503_alike(serving_settings: Settings) -> None:
    with TestClient(create_app(redis_down(serving_settings))) as client:
        response, fast_delta, slow_delta = _same_answer(
            client, _route_only(client), PREDICT, _json({"entities": ONE})
        )
        assert response.status_code == 503
        assert "unreachable" in response.json()["detail"]
        assert fast_delta == slow_delta


def test_a_bug_answers_the_plain_500_alike_and_is_raised(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(model: str, body: bytes, alias: str | None) -> bytes:
        raise RuntimeError("a bug in scoring")

    monkeypatch.setattr(client.app.state.serving.predictor, "predict", broken)
    with pytest.raises(RuntimeError, match="a bug in scoring"):
        client.post(PREDICT, json={"entities": ONE})  # the server sees it, to log it
    quiet = TestClient(client.app, raise_server_exceptions=False)
    route = _route_only(client, raise_server_exceptions=False)
    response, fast_delta, slow_delta = _same_answer(quiet, route, PREDICT, _json({"entities": ONE}))
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert fast_delta == slow_delta


def test_other_requests_go_to_fastapi_untouched(client: TestClient, fast: Counting) -> None:
    route = _route_only(client)
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/healthz", {}),
        ("GET", "/v1/models", {}),
        ("GET", "/openapi.json", {}),
        ("GET", PREDICT, {}),  # 405: the route takes POST only
        ("PUT", PREDICT, {"json": {"entities": ONE}}),
        ("POST", PREDICT + "/", {"json": {"entities": ONE}, "follow_redirects": False}),
        ("POST", "/v1/predict/fraud/extra", {"json": {"entities": ONE}}),
        ("POST", "/v1/predict/", {"json": {"entities": ONE}}),
        ("POST", "/v1/predict", {"json": {"entities": ONE}}),
        ("POST", "/v1/features", {"json": {"features": ["user_txn:count_2h"], "entities": ONE}}),
    ]
    for method, path, options in requests:
        through_app = client.request(method, path, **options)
        through_fastapi = route.request(method, path, **options)
        assert through_app.status_code == through_fastapi.status_code, path
        assert through_app.content == through_fastapi.content, path
        assert through_app.headers.multi_items() == through_fastapi.headers.multi_items(), path
    assert fast.answered == 0
    assert client.post(PREDICT, json={"entities": ONE}).status_code == 200
    assert fast.answered == 1


def test_a_root_path_goes_to_fastapi(client: TestClient, fast: Counting) -> None:
    behind_proxy = TestClient(client.app, root_path="/scoring")
    response = behind_proxy.post(PREDICT, json={"entities": ONE})
    assert response.status_code == 200, response.text
    assert len(response.json()["scores"]) == 1
    assert fast.answered == 0  # FastAPI strips the root path; the fast path leaves it to it


def test_a_client_gone_before_its_body_gets_no_answer(client: TestClient) -> None:
    fast_path: PredictFastPath = client.app.fast_path
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": PREDICT,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    before = _counts(client)
    assert fast_path.takes(scope)
    asyncio.run(fast_path(scope, receive, send))
    assert sent == []
    assert _counts(client) == before
