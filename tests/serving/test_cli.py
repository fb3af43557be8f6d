"""`fstore serve` runs the app under a real uvicorn, configured like any fstore command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml

import serving
from featurestore.config import Settings
from featurestore.services import free_port

pytestmark = pytest.mark.integration


def test_public_names() -> None:
    assert serving.__all__ == ["ModelCache", "PredictionLog", "ServingError", "create_app"]
    for name in serving.__all__:
        assert hasattr(serving, name)


def test_fstore_serve_answers_predictions(serving_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "featurestore.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap": serving_settings.kafka.bootstrap},
                "redis": serving_settings.redis.model_dump(),
                "offline": {"root": str(serving_settings.offline.root)},
                "registry": {"path": str(serving_settings.registry.path)},
                "models": {"path": str(serving_settings.models.path)},
                "serving": {"prediction_log_topic": ""},
            }
        )
    )
    fstore = Path(sys.executable).parent / "fstore"
    process = subprocess.Popen(
        [str(fstore), "serve", "--port", str(port), "--workers", "1"],
        env={**os.environ, "FSTORE_CONFIG": str(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "fstore serve did not become ready"
            time.sleep(0.2)
        response = httpx.post(f"{url}/v1/predict/fraud", json={"entities": {"user_id": "u1"}})
        assert response.status_code == 200, response.text
        assert response.json()["versions"] == [1]
        assert httpx.get(f"{url}/docs").status_code == 200
    finally:
        process.terminate()
        process.wait(30)
