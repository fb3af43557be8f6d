"""Exceptions raised by the feature store core.

Every error a user can meet says what was wrong and what to do about it.
"""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Base class of every error raised by `featurestore`."""


class ConfigError(FeatureStoreError):
    """The configuration file or an `FSTORE_*` variable is invalid."""


class ServiceError(FeatureStoreError):
    """A local service (Kafka, Redis) could not be installed, started, reached or stopped."""
