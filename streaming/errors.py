"""Exceptions raised by the stream workers."""

from __future__ import annotations

from featurestore.errors import FeatureStoreError

__all__ = ["StreamingError"]


class StreamingError(FeatureStoreError):
    """Kafka could not be reached or refused an operation."""
