"""Kafka stream workers: consume events, compute windowed features, write online and offline."""

from __future__ import annotations

from streaming.backfill import backfill_from_log, backfill_from_topic
from streaming.errors import StreamingError
from streaming.topics import ensure_topic
from streaming.worker import Worker

__all__ = ["StreamingError", "Worker", "backfill_from_log", "backfill_from_topic", "ensure_topic"]
