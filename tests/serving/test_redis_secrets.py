"""A Redis password never leaves the process: with a password in `redis.url` and Redis down (a
closed port), no response body, log line or exception text holds it — across every reader of
Redis a user reaches (drift, the dashboard's data, readyz, features, predict, the CLI) and the
functions behind them — while each still says which Redis it could not reach (user:***)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from fastapi.testclient import TestClient

from featurestore.config import RedisSettings, Settings
from featurestore.drift.history import drift_history, recent_alerts, record_history
from featurestore.drift.state import latest_drift
from featurestore.errors import OnlineStoreError
from featurestore.online import OnlineStore, read_views, read_views_async
from featurestore.redis_client import make_client, redis_errors
from featurestore.registry import Registry
from featurestore.services import free_port
from featurestore.tiles import TileLayout
from serving import create_app
from streaming.monitor.alerts import Episodes
from streaming.monitor.state import MonitorState
from tests.serving.conftest import USERS, World

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-pw-XYZ"  # noqa: S105 - the password that must not show


@pytest.fixture
def down() -> RedisSettings:
    """A password in the URL, and no Redis on its port."""
    return RedisSettings(url=f"redis://fstore:{SECRET}@127.0.0.1:{free_port()}/0", namespace="x")


def shown(settings: RedisSettings) -> str:
    return settings.url.replace(SECRET, "***")


def assert_clean(text: str, where: str) -> None:
    assert SECRET not in text, f"{where} shows the password: {text[:2000]}"


def exception_text(exc: BaseException) -> str:
    """All a traceback would print of the exception, its causes and contexts included."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += exception_text(record.exc_info[1])
        assert_clean(text, f"log line of {record.name}")


def test_http_answers_say_where_redis_is_but_not_its_password(
    serving_settings: Settings, down: RedisSettings, logs: pytest.LogCaptureFixture
) -> None:
    settings = serving_settings.model_copy(update={"redis": down})
    one = {"user_id": USERS[:1]}
    with TestClient(create_app(settings)) as client:
        answers = {
            "predict": client.post("/v1/predict/fraud", json={"entities": one}),
            "features": client.post(
                "/v1/features", json={"features": ["user_txn:count_2h"], "entities": one}
            ),
            "drift": client.get("/v1/drift"),
            "drift of a model": client.get("/v1/drift", params={"model": "fraud"}),
            "readyz": client.get("/readyz"),
            "dashboard overview": client.get("/ui/api/overview"),
            "dashboard drift": client.get("/ui/api/drift"),
        }
    for name, answer in answers.items():
        assert_clean(answer.text + str(answer.headers), name)
        assert shown(down) in answer.text, f"{name} does not say which Redis: {answer.text}"
    for name in ("predict", "features", "drift", "drift of a model", "readyz"):
        assert answers[name].status_code == 503, answers[name].text
    overview = answers["dashboard overview"].json()
    assert overview["views"]["error"] and overview["alerts"]["error"]
    assert answers["dashboard drift"].json()["models"]["error"]


def test_errors_of_every_redis_reader_name_the_url_without_the_password(
    world: World, down: RedisSettings, logs: pytest.LogCaptureFixture
) -> None:
    registered = Registry(world.settings.registry).get_view("user_txn")
    layout = TileLayout(registered.view)
    reads = [("user_txn", registered.version, layout, USERS[:2])]
    store = OnlineStore(down)
    client = make_client(down)
    calls: dict[str, Callable[[], Any]] = {
        "latest_drift": lambda: latest_drift(down),
        "drift_history": lambda: drift_history(down, "fraud"),
        "recent_alerts": lambda: recent_alerts(down),
        "record_history": lambda: record_history(client, "x", "fraud", [{"a": 1}]),
        "Episodes": lambda: Episodes(client, "x").open_episodes("fraud"),
        "MonitorState": lambda: MonitorState(down, "g").snapshot(),
        "OnlineStore.positions": lambda: store.positions("user_txn", registered.version),
        "read_views": lambda: read_views(store, reads, 1_767_225_600_000_000),
        "read_views_async": lambda: asyncio.run(
            read_views_async(store, reads, 1_767_225_600_000_000)
        ),
    }
    for name, call in calls.items():
        with pytest.raises(OnlineStoreError) as caught:
            call()
        text = exception_text(caught.value)
        assert_clean(text, name)
        assert shown(down) in str(caught.value), f"{name}: {caught.value}"
    store.close()


def test_a_password_in_the_cause_is_scrubbed_and_the_cause_dropped() -> None:
    """A failure whose own text holds the password (a client library echoing the URL)."""
    settings = RedisSettings(url=f"redis://:{SECRET}@cache:6379/0")
    for where in (settings, make_client(settings)):
        with pytest.raises(OnlineStoreError) as caught:
            with redis_errors(where, "testing"):
                raise redis_lib.ConnectionError(f"cannot reach redis://:{SECRET}@cache:6379/0")
        text = exception_text(caught.value)
        assert_clean(text, f"the error of {type(where).__name__}")
        assert str(caught.value) == (
            "Redis at redis://:***@cache:6379/0 is unreachable while testing: "
            "cannot reach redis://:***@cache:6379/0"
        )
        assert caught.value.__cause__ is None


def test_the_cli_says_where_redis_is_but_not_its_password(
    world: World, down: RedisSettings, tmp_path: Path
) -> None:
    """`fstore verify` reads the online store: with Redis down it exits 1 with the error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env.update(
        {
            "FSTORE_CONFIG": str(tmp_path / "none.yaml"),
            "FSTORE_REDIS_URL": down.url,
            "FSTORE_KAFKA_BOOTSTRAP": world.settings.kafka.bootstrap,
            "FSTORE_REGISTRY_PATH": str(world.settings.registry.path),
            "FSTORE_OFFLINE_ROOT": str(world.settings.offline.root),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "COLUMNS": "200",
        }
    )
    (tmp_path / "none.yaml").write_text("{}\n")
    result = subprocess.run(
        [sys.executable, "-c", "from featurestore.cli import main; main()", "verify", "user_txn"]
        + ["--sample", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert_clean(output, "fstore verify")
    assert "is unreachable" in output and shown(down) in " ".join(output.split()), output
