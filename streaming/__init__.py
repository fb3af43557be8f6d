"""Kafka stream workers: consume events, compute windowed features, write online and offline."""

from __future__ import annotations

from streaming.errors import StreamingError
from streaming.ingest.backfill import backfill_from_log, backfill_from_topic
from streaming.ingest.worker import Worker
from streaming.topics import ensure_topic

__all__ = ["StreamingError", "Worker", "backfill_from_log", "backfill_from_topic", "ensure_topic"]
