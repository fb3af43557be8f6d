"""Feature store core: definitions, registry, online and offline stores, local services."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from featurestore.config import Settings, load_settings
from featurestore.definitions import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    KafkaSource,
)
from featurestore.errors import (
    ConfigError,
    DefinitionError,
    FeatureStoreError,
    OnlineStoreError,
    RegistryError,
    RequestError,
    ServiceError,
)
from featurestore.on_demand import OnDemandFeature, RequestSource, on_demand_feature
from featurestore.registry import RegisteredView, Registry
from featurestore.repo import load_repo
from featurestore.store import FeatureStore, OnlineResponse
from featurestore.windows import Window

try:
    __version__ = _version("fstore")  # one home for the version: pyproject.toml
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Aggregation",
    "ConfigError",
    "DefinitionError",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureView",
    "KafkaSource",
    "OnDemandFeature",
    "OnlineResponse",
    "OnlineStoreError",
    "RegisteredView",
    "Registry",
    "RegistryError",
    "RequestError",
    "RequestSource",
    "ServiceError",
    "Settings",
    "Window",
    "__version__",
    "load_repo",
    "load_settings",
    "on_demand_feature",
]
