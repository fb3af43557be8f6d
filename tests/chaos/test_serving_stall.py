"""`fstore serve` (the real command, uvicorn and all) under steady `/v1/predict` load while its
Redis is stopped for real (SIGSTOP) for a few seconds.

Every request gets an answer, and only 200 or 503: the ones that meet the stopped Redis answer
503 with Retry-After within `serving.redis_deadline_ms` (plus a loaded machine's scheduling),
none of them 200; once Redis runs again, every request answers 200 with the same scores as
before the stall (the world's features do not change meanwhile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from featurestore.config import Settings
from featurestore.services import free_port
from tests.redis_faults import OwnRedis
from tests.serving.conftest import USERS, with_serving

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

FSTORE = Path(sys.executable).with_name("fstore")
DEADLINE_S = 0.25
MARGIN_S = 0.5  # a loaded two-core machine's scheduling, on top of the deadline
STALL_S = 3.0
THREADS, RATE = 8, 80.0  # requests a second, in all


@dataclass
class Answer:
    user: str
    sent: float  # time.monotonic()
    seconds: float
    status: int  # 0: no answer at all
    retry_after: str | None
    score: float | None


def predict(url: str, user: str) -> Answer:
    body = json.dumps({"entities": {"user_id": [user]}}).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback URL of the test
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    sent = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, headers, text = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, text = exc.code, exc.headers, exc.read()
    except OSError:
        return Answer(user, sent, time.monotonic() - sent, 0, None, None)
    seconds = time.monotonic() - sent
    score = json.loads(text)["scores"][0] if status == 200 else None
    return Answer(user, sent, seconds, status, headers.get("Retry-After"), score)


class SteadyLoad:
    """`RATE` requests a second from `THREADS` threads, each on its own schedule, until
    stopped; a request that waits delays only its own thread's next one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(THREADS)
        ]

    def _run(self, index: int) -> None:
        period = THREADS / RATE
        due = time.monotonic() + index * period / THREADS
        n = index
        try:
            while not self.stopping.is_set():
                time.sleep(max(0.0, due - time.monotonic()))
                self.answers.append(predict(self.url, USERS[n % 20]))
                n += THREADS
                due += period
        except BaseException as exc:  # re-raised by `stop` in the test's thread
            self.errors.append(exc)

    def __enter__(self) -> SteadyLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def served(
    own_redis_world: tuple[OwnRedis, Settings], tmp_path: Path
) -> Iterator[tuple[OwnRedis, str]]:
    """`fstore serve` on the world's copy in a Redis of the test's own; the predict URL."""
    server, settings = own_redis_world
    settings = with_serving(settings, redis_deadline_ms=DEADLINE_S * 1000, host="127.0.0.1")
    config = tmp_path / "featurestore.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env["FSTORE_CONFIG"] = str(config)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/predict/fraud"
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(FSTORE), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while predict(url, USERS[0]).status != 200:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        yield server, url
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_a_stopped_redis_under_load_gets_503s_within_the_deadline_then_the_same_scores(
    served: tuple[OwnRedis, str],
) -> None:
    server, url = served
    before: dict[str, Any] = {}
    for user in USERS[:20]:
        answer = predict(url, user)
        assert answer.status == 200, answer
        before[user] = answer.score

    with SteadyLoad(url) as load:
        time.sleep(2.0)
        server.pause()
        stopped = time.monotonic()
        try:
            time.sleep(STALL_S)
        finally:
            server.resume()
        resumed = time.monotonic()
        time.sleep(3.0)
    answers = sorted(load.answers, key=lambda a: a.sent)

    assert len(answers) > RATE * 6, len(answers)  # the load held up through the stall
    assert {a.status for a in answers} <= {200, 503}, [
        a for a in answers if a.status not in {200, 503}
    ][:3]
    shed = [a for a in answers if a.status == 503]
    assert shed, "no request met the stopped Redis"
    assert all(a.retry_after == "1" for a in shed)
    assert max(a.seconds for a in shed) < DEADLINE_S + MARGIN_S, max(a.seconds for a in shed)
    # A request sent while Redis was stopped, and not answerable before it ran again, is a 503.
    stalled = [a for a in answers if stopped + 0.05 <= a.sent <= resumed - DEADLINE_S - 0.1]
    assert len(stalled) >= 4 * THREADS, len(stalled)  # each thread met it again and again
    assert {a.status for a in stalled} == {503}
    # From a second after it ran again, every request scores, as before the stall.
    after = [a for a in answers if a.sent >= resumed + 1.0]
    assert len(after) > RATE, len(after)
    assert all(a.status == 200 for a in after), [a for a in after if a.status != 200][:3]
    assert all(a.score == before[a.user] for a in after)
