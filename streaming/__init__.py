"""Kafka stream workers: consume events, compute windowed features, write online and offline."""

from __future__ import annotations

from streaming.errors import StreamingError
from streaming.topics import ensure_topic

__all__ = ["StreamingError", "ensure_topic"]
