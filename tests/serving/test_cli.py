"""`fstore serve` runs the app under a real uvicorn, configured like any fstore command."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx
import pytest
import yaml

import serving
from featurestore.config import Settings
from tests.serve_process import fstore_serve_process

pytestmark = pytest.mark.integration


def test_public_names() -> None:
    assert serving.__all__ == ["ModelCache", "PredictionLog", "ServingError", "create_app"]
    for name in serving.__all__:
        assert hasattr(serving, name)


def test_fstore_serve_answers_predictions(serving_settings: Settings, tmp_path: Path) -> None:
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
    with fstore_serve_process(config, tmp_path / "serve.log", "--workers", "1") as url:
        response = httpx.post(f"{url}/v1/predict/fraud", json={"entities": {"user_id": "u1"}})
        assert response.status_code == 200, response.text
        assert response.json()["versions"] == [1]
        assert httpx.get(f"{url}/docs").status_code == 200
