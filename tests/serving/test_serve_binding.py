"""`fstore serve` beyond loopback: refused with no API key, served with one or `--insecure`.
Real `fstore serve` processes on 0.0.0.0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml

from featurestore.api_keys import KeyStore
from featurestore.config import RegistrySettings, Settings
from featurestore.services import free_port
from serving.cli import is_loopback

pytestmark = pytest.mark.integration


def _config(settings: Settings, tmp_path: Path) -> Path:
    registry = tmp_path / "registry"
    shutil.copytree(settings.registry.path, registry)
    config = tmp_path / "featurestore.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap": settings.kafka.bootstrap},
                "redis": settings.redis.model_dump(),
                "offline": {"root": str(settings.offline.root)},
                "registry": {"path": str(registry)},
                "models": {"path": str(settings.models.path)},
                "serving": {"prediction_log_topic": ""},
            }
        )
    )
    return config


def _serve(config: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
    fstore = Path(sys.executable).parent / "fstore"
    return subprocess.Popen(  # noqa: S603 - our own command
        [str(fstore), "serve", "--host", "0.0.0.0", "--port", str(port), *args],  # noqa: S104
        env={**os.environ, "FSTORE_CONFIG": str(config), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _ready(process: subprocess.Popen[bytes], url: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(f"{url}/healthz")
        except httpx.TransportError:
            pass  # not listening yet
        assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "fstore serve did not start"
        time.sleep(0.2)


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1")
    assert is_loopback("[::1]") and is_loopback("LOCALHOST")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")  # noqa: S104
    assert not is_loopback("10.0.0.5") and not is_loopback("example.org")


def test_no_key_refuses_any_address_but_loopback(
    serving_settings: Settings, tmp_path: Path
) -> None:
    config = _config(serving_settings, tmp_path)
    refused = _serve(config, free_port())
    out, _ = refused.communicate(timeout=120)
    assert refused.returncode == 1
    text = out.decode()
    assert "refusing to listen on 0.0.0.0: no API key is defined" in text
    assert "fstore keys create" in text and "--insecure" in text

    port = free_port()
    insecure = _serve(config, port, "--insecure")
    try:
        assert _ready(insecure, f"http://127.0.0.1:{port}").status_code == 200
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models")
        assert models.status_code == 200  # what --insecure means: reads open
    finally:
        insecure.terminate()
        out, _ = insecure.communicate(timeout=30)
    assert "--insecure: listening on 0.0.0.0 with no API key" in out.decode()


def test_a_key_lets_it_listen_and_guards_every_read(
    serving_settings: Settings, tmp_path: Path
) -> None:
    config = _config(serving_settings, tmp_path)
    store = KeyStore(RegistrySettings(path=tmp_path / "registry"))
    _, secret = store.create("reader", ["models:read"], "tests")
    port = free_port()
    process = _serve(config, port)
    url = f"http://127.0.0.1:{port}"
    try:
        _ready(process, url)
        assert httpx.get(f"{url}/v1/models").status_code == 401
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert secret not in out.decode()
