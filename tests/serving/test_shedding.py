"""Load shedding on a Redis of the test's own, stopped for real (SIGSTOP): a request whose reads
get no answer within `serving.redis_deadline_ms` answers 503 with Retry-After within that
deadline, whichever way it came in; once Redis runs again every request scores again, with its
own values (the pipelined connection stayed in step); and past `serving.max_in_flight`
requests in flight, a request is refused at once while probes and metrics still answer."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from featurestore.config import RedisSettings, ServingSettings, Settings
from featurestore.errors import RedisUnavailable
from serving import create_app
from serving.metrics import ServingMetrics
from serving.shedding import LoadShedder
from tests.redis_faults import OwnRedis
from tests.serving.conftest import USERS, with_serving
from tests.serving.test_fastpath import _route_only

pytestmark = pytest.mark.integration

PREDICT = "/v1/predict/fraud"
FEATURES = "/v1/features"
MARGIN_S = 0.5  # a loaded two-core machine's scheduling, on top of the deadline


def _metric(client: TestClient, name: str, **labels: str) -> float:
    registry = client.app.state.serving.metrics.registry
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _scores(client: TestClient, users: list[str]) -> list[Any]:
    response = client.post(PREDICT, json={"entities": {"user_id": users}})
    assert response.status_code == 200, response.text
    return list(response.json()["scores"])


def test_a_stopped_redis_answers_503_within_the_deadline_then_scores_resume(
    own_redis_world: tuple[OwnRedis, Settings],
) -> None:
    server, settings = own_redis_world
    deadline_s = 0.3
    settings = with_serving(settings, redis_deadline_ms=deadline_s * 1000)
    with TestClient(create_app(settings)) as client:
        route = _route_only(client)
        alone = {user: _scores(client, [user]) for user in USERS[:12]}
        server.pause()
        try:
            requests = [
                (client, PREDICT, {"entities": {"user_id": ["u1"]}}),  # the fast path
                (route, PREDICT, {"entities": {"user_id": ["u2", "u3"]}}),  # the FastAPI route
                (
                    client,
                    FEATURES,
                    {"features": ["user_txn:count_2h"], "entities": {"user_id": "u1"}},
                ),
            ]
            for way, path, body in requests * 2:
                started = time.monotonic()
                response = way.post(path, json=body)
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert "did not answer within 300 ms (serving.redis_deadline_ms)" in response.text
                assert elapsed < deadline_s + MARGIN_S, (path, elapsed)
            assert _metric(client, "fstore_shed_requests_total", reason="redis_deadline") == 6
        finally:
            server.resume()
        # The given-up reads are answered and dropped in their place: every request, alone or
        # many at once, gets its own scores again.
        for user, scores in alone.items():
            assert _scores(client, [user]) == scores
        answers: dict[str, list[Any]] = {}

        def ask(user: str) -> None:
            answers[user] = _scores(client, [user])

        threads = [threading.Thread(target=ask, args=(user,)) for user in alone]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == alone
        assert client.post(FEATURES, json=requests[2][2]).status_code == 200


def test_past_max_in_flight_a_request_is_refused_at_once(
    own_redis_world: tuple[OwnRedis, Settings],
) -> None:
    server, settings = own_redis_world
    settings = with_serving(settings, max_in_flight=2, redis_deadline_ms=5_000)
    with TestClient(create_app(settings)) as client:
        shedder = client.app.state.serving.shedder
        assert _scores(client, ["u1"])
        server.pause()
        held: list[Any] = []
        try:
            holders = [
                threading.Thread(
                    target=lambda user=user: held.append(
                        client.post(PREDICT, json={"entities": {"user_id": [user]}})
                    )
                )
                for user in ("u1", "u2")
            ]
            for thread in holders:
                thread.start()
            waited = time.monotonic()
            while shedder.in_flight < 2:
                assert time.monotonic() - waited < 5, "the two requests never got in flight"
                time.sleep(0.01)
            behind_proxy = TestClient(
                client.app, root_path="/scoring"
            )  # FastAPI, not the fast path
            refused = [
                (client, PREDICT, {"entities": {"user_id": ["u3"]}}),
                (behind_proxy, PREDICT, {"entities": {"user_id": ["u3"]}}),
                (
                    client,
                    FEATURES,
                    {"features": ["user_txn:count_2h"], "entities": {"user_id": "u3"}},
                ),
            ]
            for way, path, body in refused:
                started = time.monotonic()
                response = way.post(path, json=body)
                assert time.monotonic() - started < MARGIN_S
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert "already has 2 requests in flight (serving.max_in_flight)" in response.text
            # Probes and metrics are never shed: they show the overload.
            assert client.get("/healthz").status_code == 200
            metrics = client.get("/metrics").text
            assert "fstore_requests_in_flight 2.0" in metrics
            assert 'fstore_shed_requests_total{reason="in_flight"} 3.0' in metrics
            assert 'fstore_errors_total{kind="Overloaded",status="503"} 3.0' in metrics
        finally:
            server.resume()
        for thread in holders:
            thread.join()
        assert [response.status_code for response in held] == [200, 200]
        assert shedder.in_flight == 0
        assert client.post(PREDICT, json={"entities": {"user_id": ["u3"]}}).status_code == 200


def test_only_the_deadline_s_own_cancellation_becomes_a_503() -> None:
    """One timer keeps every read's deadline (shedding._Deadlines): each read ends at its own,
    the task is left as it was, and a cancellation from elsewhere is not taken for one."""
    shedder = LoadShedder(ServingSettings(redis_deadline_ms=100), RedisSettings(), ServingMetrics())

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def one(delay: float) -> float:
            await asyncio.sleep(delay)
            started = loop.time()
            with pytest.raises(RedisUnavailable, match="did not answer within 100 ms"):
                await shedder.read(asyncio.sleep(5))
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
            return loop.time() - started

        waits = await asyncio.gather(*(one(i * 0.03) for i in range(5)))
        assert all(0.09 < wait < 0.1 + MARGIN_S for wait in waits), waits
        assert await shedder.read(asyncio.sleep(0.01, "in time")) == "in time"
        other = asyncio.ensure_future(shedder.read(asyncio.sleep(5)))
        await asyncio.sleep(0.01)
        other.cancel()
        with pytest.raises(asyncio.CancelledError):
            await other
        deadlines = shedder._deadlines
        assert deadlines is not None and not deadlines.reads and not deadlines.cancelled

    asyncio.run(main())
