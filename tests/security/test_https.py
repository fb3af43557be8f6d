"""`fstore serve --ssl-certfile/--ssl-keyfile`: the API over HTTPS, its certificate verified by
the client against the test's CA; and certificates it cannot use refused before it starts."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml

from featurestore.errors import ConfigError
from featurestore.services import free_port
from serving.tls import tls_options
from tests.security.conftest import Certs
from tests.serving.conftest import World

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_fstore_serve_answers_over_verified_https(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    config = tmp_path / "featurestore.yaml"
    settings = world.settings
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap": settings.kafka.bootstrap},
                "redis": settings.redis.model_dump(),
                "offline": {"root": str(settings.offline.root)},
                "registry": {"path": str(settings.registry.path)},
                "models": {"path": str(settings.models.path)},
                "serving": {"prediction_log_topic": ""},
            }
        )
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env["FSTORE_CONFIG"] = str(config)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = ["serve", "--port", str(port), "--ssl-certfile", str(certs.server_cert)]
    process = subprocess.Popen(
        [sys.executable, "-c", "from featurestore.cli import main; main()", *argv,
         "--ssl-keyfile", str(certs.server_key)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    trusted = ssl.create_default_context(cafile=str(certs.ca))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"https://127.0.0.1:{port}/readyz", verify=trusted).status_code:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "fstore serve did not come up"
            time.sleep(0.2)
        answer = httpx.post(
            f"https://localhost:{port}/v1/predict/fraud",
            json={"entities": {"user_id": ["u1"]}},
            verify=trusted,
        )
        assert answer.status_code == 200, answer.text
        # A client that does not trust our CA refuses the server; plain HTTP gets no answer.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/healthz")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        process.terminate()
        process.wait(30)


def test_a_key_without_its_certificate_is_refused(certs: Certs) -> None:
    with pytest.raises(ConfigError, match="--ssl-keyfile needs --ssl-certfile"):
        tls_options(None, certs.server_key)


@pytest.mark.parametrize(
    ("cert", "key", "says"),
    [
        ("ca", None, "cannot serve HTTPS with certificate"),  # no key anywhere
        ("server_cert", "client_key", "cannot serve HTTPS"),  # a key of another certificate
        ("missing", None, "No such file"),
    ],
)
def test_an_unusable_certificate_is_one_clear_error(
    certs: Certs, tmp_path: Path, cert: str, key: str | None, says: str
) -> None:
    paths = {**vars(certs), "missing": tmp_path / "nope.pem"}
    with pytest.raises(ConfigError, match=says) as caught:
        tls_options(paths[cert], None if key is None else paths[key])
    assert "--ssl-certfile" in str(caught.value)


def test_certificate_and_key_become_uvicorn_options(certs: Certs) -> None:
    assert tls_options(certs.server_cert, certs.server_key) == {
        "ssl_certfile": str(certs.server_cert),
        "ssl_keyfile": str(certs.server_key),
    }
