"""Exceptions raised by the stream workers."""

from __future__ import annotations

from featurestore.errors import FeatureStoreError

__all__ = ["DeliveryInterrupted", "StreamingError"]


class StreamingError(FeatureStoreError):
    """A stream worker cannot go on: Kafka could not be reached or refused an operation, a
    file to import is unusable, or the views to ingest are wrong."""


class DeliveryInterrupted(StreamingError):
    """Told to stop while messages still waited for Kafka: the caller must not move past them
    (the batch is replayed on restart and sends them again)."""
