"""No secret leaves the process. With every secret the configuration can hold set — the Redis
password (in the URL's user part, or as `?password=`), the SASL password, the admin and read
tokens — and Redis and Kafka both down (closed ports), nothing a user can see holds one: the
body and headers of every route's answer (with no token, a wrong one, the read and the admin
token), every log line (caplog, with exception texts), what the process and librdkafka write to
stderr, and the output of `fstore config`, `fstore ingest`, `fstore serve` and `fstore verify`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from featurestore.config import (
    KafkaSettings,
    ModelsSettings,
    MonitorSettings,
    RedisSettings,
    ServingSettings,
    Settings,
)
from featurestore.services import free_port
from serving import create_app
from streaming.monitor.alerts import AlertSink
from tests.security.conftest import Certs
from tests.serving.conftest import FEATURES, USERS, World

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REDIS_SECRET = "redis-secret-Hq3v9"  # noqa: S105 - each a throwaway that must not show
SASL_SECRET = "sasl-secret-Jd8k2"  # noqa: S105
KEY_SECRET = "key-secret-Lm5p7"  # noqa: S105
ADMIN_SECRET = "admin-token-Pw4x6"  # noqa: S105
READ_SECRET = "read-token-Zc1n8"  # noqa: S105
SECRETS = (REDIS_SECRET, SASL_SECRET, KEY_SECRET, ADMIN_SECRET, READ_SECRET)
REDIS_FORMS = {
    "user-part": "redis://fstore:{secret}@127.0.0.1:{port}/0",
    "query": "redis://127.0.0.1:{port}/0?username=fstore&password={secret}",
}


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a secret: {text[:3000]}"


def secret_settings(world: World, certs: Certs, form: str, tmp_path: Path) -> Settings:
    """The world's store (a copy of its model registry: the scan moves aliases) with every
    secret set, and neither Redis nor Kafka listening."""
    shutil.copytree(world.settings.models.path, tmp_path / "models")
    redis = REDIS_FORMS[form].format(secret=REDIS_SECRET, port=free_port())
    kafka = KafkaSettings(
        bootstrap=f"127.0.0.1:{free_port()}",
        properties={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "fstore",
            "sasl.password": SASL_SECRET,
            "ssl.ca.location": str(certs.ca),
            "ssl.key.password": KEY_SECRET,
        },
    )
    return world.settings.model_copy(
        update={
            "kafka": kafka,
            "redis": RedisSettings(url=redis, namespace=world.settings.redis.namespace),
            "models": ModelsSettings(path=tmp_path / "models"),
            "serving": ServingSettings(
                admin_token=ADMIN_SECRET,  # type: ignore[arg-type]
                read_token=READ_SECRET,  # type: ignore[arg-type]
                prediction_log_topic="fstore.predictions.secret-scan",
                redis_deadline_ms=2000,
            ),
        }
    )


def _bodies(path: str) -> list[object]:
    """Plausible bodies for a route, and one it must refuse."""
    one = {"user_id": USERS[:2]}
    if path.startswith("/v1/predict"):
        return [{"entities": one, "return_features": True}, {"entities": "x"}]
    if path == "/v1/features":
        return [{"features": FEATURES, "entities": one}, {"features": ["nope:x"]}]
    if path.endswith("/traffic"):
        return [{"weights": {"production": 1.0}}, {}]
    if path.endswith("/rollback"):
        return [{"alias": "production"}, {"alias": 3}]
    if "/aliases/" in path:
        return [{"version": 1}, {"version": -1}]
    return [None]


def _routes(routes: list[Any]) -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every route, inside included routers too."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        elif isinstance(getattr(route, "methods", None), set):
            yield route.path, route.methods


def _requests(app: Any) -> Iterator[tuple[str, str, object]]:
    """(method, URL, body) for every route of the app — documented or not — its path
    parameters filled in."""
    found = {path: {m.upper() for m in methods} for path, methods in app.openapi()["paths"].items()}
    for path, methods in _routes(app.routes):
        found.setdefault(path, set()).update(methods)
    # Reads first: the changes (alias moves, traffic) come last, not to take a model away.
    for route, methods in sorted(found.items(), key=lambda item: ("/aliases/" in item[0], item)):
        path = route.replace("{model}", "fraud").replace("{alias}", "production")
        path = path.replace("{name}", "app.js" if path.startswith("/ui/static") else "fraud")
        urls = [path]
        if path in ("/v1/drift", "/ui/api/drift"):
            urls.append(f"{path}?model=fraud")
        for method in sorted(methods - {"HEAD"}):
            for url in urls:
                bodies = _bodies(path) if method in ("POST", "PUT") else [None]
                for body in bodies:
                    yield method, url, body


@pytest.mark.parametrize("form", list(REDIS_FORMS))
def test_no_answer_log_line_or_stderr_holds_a_secret(
    world: World,
    certs: Certs,
    form: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    settings = secret_settings(world, certs, form, tmp_path)
    tokens = {
        "no token": {},
        "a wrong token": {"Authorization": "Bearer nope"},
        "the read token": {"Authorization": f"Bearer {READ_SECRET}"},
        "the admin token": {"Authorization": f"Bearer {ADMIN_SECRET}"},
    }
    statuses: dict[str, set[int]] = {}
    with TestClient(create_app(settings)) as client:
        for method, url, body in _requests(client.app):
            for who, headers in tokens.items():
                content = None if body is None else orjson.dumps(body)
                answer = client.request(method, url, headers=headers, content=content)
                where = f"{method} {url} with {who} (body {body})"
                assert_clean(answer.text + repr(answer.headers), where)
                assert answer.status_code < 500 or answer.status_code == 503, where
                statuses.setdefault(f"{method} {url}", set()).add(answer.status_code)
    # The down servers were reached for: each reader said 503, naming Redis without secrets.
    for route in ("POST /v1/predict/fraud", "POST /v1/features", "GET /v1/drift"):
        assert 503 in statuses.get(route, ()), (route, statuses)
    assert len(statuses) >= 15, sorted(statuses)

    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += "".join(traceback.format_exception(record.exc_info[1]))
        assert_clean(text, f"a log line of {record.name}")
    out, err = capfd.readouterr()  # librdkafka writes its log to the process's stderr
    assert_clean(out + err, "stdout/stderr")


def _env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The environment of an `fstore` command configured like `settings` (secrets included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    (tmp_path / "none.yaml").write_text("{}\n")
    env.update(
        {
            "FSTORE_CONFIG": str(tmp_path / "none.yaml"),
            "FSTORE_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
            "FSTORE_KAFKA_PROPERTIES": orjson.dumps(settings.kafka.properties).decode(),
            "FSTORE_REDIS_URL": settings.redis.url,
            "FSTORE_REDIS_NAMESPACE": settings.redis.namespace,
            "FSTORE_REGISTRY_PATH": str(settings.registry.path),
            "FSTORE_OFFLINE_ROOT": str(settings.offline.root),
            "FSTORE_MODELS_PATH": str(settings.models.path),
            "FSTORE_SERVING_ADMIN_TOKEN": ADMIN_SECRET,
            "FSTORE_SERVING_READ_TOKEN": READ_SECRET,
            "FSTORE_SERVING_PREDICTION_LOG_TOPIC": settings.serving.prediction_log_topic,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "COLUMNS": "300",
        }
    )
    return env


def _fstore(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from featurestore.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_no_cli_output_holds_a_secret(world: World, certs: Certs, tmp_path: Path) -> None:
    """For both forms of the Redis password, every command at once: `fstore ingest` waits out
    its topic creation (30 s) on a Kafka that is down, and this way only once."""
    runs = {}
    for form in REDIS_FORMS:
        folder = tmp_path / form
        folder.mkdir()
        settings = secret_settings(world, certs, form, folder)
        env, port = _env(settings, folder), free_port()
        commands = {
            "fstore config": _fstore("config", env=env),
            "fstore ingest": _fstore("ingest", env=env),
            "fstore verify": _fstore("verify", "user_txn", "--sample", "5", env=env),
            "fstore serve (unusable certificate)": _fstore(
                "serve", "--ssl-certfile", str(certs.ca), "--port", str(port), env=env
            ),
            "fstore serve": _fstore("serve", "--port", str(port), env=env),
        }
        runs[form] = (settings, port, commands)
    for form, (settings, port, commands) in runs.items():
        answers = _ask_the_server(commands["fstore serve"], port)
        assert_clean("\n".join(answers), f"fstore serve's answers ({form})")
        outputs = {}
        for name, process in commands.items():
            stdout, stderr = process.communicate(timeout=120)
            outputs[name] = (process.returncode, stdout + stderr)
        for name, (_code, output) in outputs.items():
            assert_clean(output, f"{name} ({form})")
        _check_outputs(settings, outputs)


def _ask_the_server(server: subprocess.Popen[str], port: int) -> list[str]:
    """The running server, asked over HTTP while Redis and Kafka are down; then stopped."""
    url, answers = f"http://127.0.0.1:{port}", []
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass  # not listening yet
        assert server.poll() is None and time.monotonic() < deadline, "fstore serve never came up"
        time.sleep(0.2)
    read = {"Authorization": f"Bearer {READ_SECRET}"}
    for method, path, body in [
        ("POST", "/v1/predict/fraud", {"entities": {"user_id": USERS[:2]}}),
        ("POST", "/v1/features", {"features": FEATURES, "entities": {"user_id": USERS[:2]}}),
        ("GET", "/v1/drift", None),
        ("GET", "/readyz", None),
    ]:
        answer = httpx.request(method, f"{url}{path}", headers=read, json=body, timeout=30)
        answers.append(f"{method} {path}: {answer.status_code} {answer.text} {answer.headers}")
        assert answer.status_code == 503, answers[-1]
    server.terminate()
    return answers


def _check_outputs(settings: Settings, outputs: dict[str, tuple[int, str]]) -> None:
    """Each command said what it had to, masked."""
    code, shown = outputs["fstore config"]
    assert code == 0, shown
    config = orjson.loads(shown)
    masked = "***"
    assert config["kafka"]["properties"]["sasl.password"] == masked
    assert config["kafka"]["properties"]["ssl.key.password"] == masked
    assert config["serving"]["admin_token"] == config["serving"]["read_token"] == masked
    assert masked in config["redis"]["url"], config["redis"]
    for name in ("fstore ingest", "fstore verify", "fstore serve (unusable certificate)"):
        code, output = outputs[name]
        assert code == 1, f"{name}: {output}"
    flat = " ".join(outputs["fstore verify"][1].split())
    assert "Redis at redis://" in flat and "is unreachable" in flat, flat
    flat = " ".join(outputs["fstore ingest"][1].split())
    assert "topic" in flat and settings.kafka.bootstrap in flat, flat
    assert "cannot serve HTTPS" in outputs["fstore serve (unusable certificate)"][1]


def test_a_failing_alert_webhook_is_logged_without_its_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A webhook URL often carries a token (`?token=`) or a user's password: its failure is
    logged naming the URL without them."""
    port = free_port()  # nothing listens: the call fails for real
    url = f"http://hooks:{ADMIN_SECRET}@127.0.0.1:{port}/alert?channel=ops&token={READ_SECRET}"
    settings = MonitorSettings(webhook_url=url, webhook_timeout_s=2)
    sink = AlertSink(settings, outbox=None)  # type: ignore[arg-type] - notify never sends
    sink.notify([{"episode": "e1", "kind": "alert"}])
    assert sink.failures == 1
    assert f"http://hooks:***@127.0.0.1:{port}/alert?channel=ops&token=***" in caplog.text
    assert_clean(caplog.text, "the webhook's warning")
