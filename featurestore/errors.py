"""Exceptions raised by the feature store core.

Every error a user can meet says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DefinitionError",
    "FeatureStoreError",
    "InitError",
    "OfflineStoreError",
    "OnDemandError",
    "OnlineStoreError",
    "RedisUnavailable",
    "RegistryError",
    "RequestError",
    "ServiceError",
]


class FeatureStoreError(Exception):
    """Base class of every error raised by `featurestore`."""


class ConfigError(FeatureStoreError):
    """The configuration file or an `FSTORE_*` variable is invalid."""


class ServiceError(FeatureStoreError):
    """A local service (Kafka, Redis) could not be installed, started, reached or stopped."""


class OnlineStoreError(FeatureStoreError):
    """Redis (the online store) could not be reached or answered unexpectedly."""


class RedisUnavailable(OnlineStoreError):
    """Redis cannot serve now, and will again: it is unreachable or silent, or it answered an
    error reply that says "not now" (LOADING, BUSY, READONLY, OOM, MASTERDOWN, ...). Workers
    wait it out with backoff (`featurestore.retry`); the API answers 503 with `Retry-After`.

    `reply` is the error reply's code (None: no answer at all); `retry_after_s` is how long a
    client is told to wait before trying again.
    """

    def __init__(self, message: str, reply: str | None = None, retry_after_s: float = 1.0):
        super().__init__(message)
        self.reply = reply
        self.retry_after_s = retry_after_s


class DefinitionError(FeatureStoreError):
    """A feature repo could not be loaded: a file fails to import, or a definition is invalid."""


class RegistryError(FeatureStoreError):
    """The registry cannot be read or written, or holds no such view, version or feature."""


class RequestError(FeatureStoreError):
    """A read asked for something malformed: missing entity keys, unequal lengths, naive times."""


class OfflineStoreError(FeatureStoreError):
    """The offline log's storage (a local folder or an S3 bucket) could not be reached or
    answered an error. The message never holds the storage's credentials."""


class InitError(FeatureStoreError):
    """`fstore init` cannot write a new repo: the folder holds files, or no such template."""


class OnDemandError(FeatureStoreError):
    """A request-time feature's function failed or returned a wrong value (it raised, or its
    output has the wrong length or type). The message names the feature and the error; the
    API answers 500 without a traceback."""
