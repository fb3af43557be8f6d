"""Feature store core: definitions, configuration, online and offline stores, local services."""

from __future__ import annotations

from featurestore.config import Settings, load_settings
from featurestore.errors import ConfigError, FeatureStoreError, ServiceError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FeatureStoreError",
    "ServiceError",
    "Settings",
    "__version__",
    "load_settings",
]
