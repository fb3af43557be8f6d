"""Online serving: FastAPI app, model scoring, traffic split and shadow (built on `featurestore`).

The names below load on first use: `fstore` imports `serving.cli` for every command, and the
app's imports (FastAPI, LightGBM with OpenMP) would cost each of them most of a second.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.app import create_app
    from serving.errors import ServingError
    from serving.model_cache import ModelCache
    from serving.prediction_log import PredictionLog

__all__ = ["ModelCache", "PredictionLog", "ServingError", "create_app"]

_HOMES = {
    "ModelCache": "serving.model_cache",
    "PredictionLog": "serving.prediction_log",
    "ServingError": "serving.errors",
    "create_app": "serving.app",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
