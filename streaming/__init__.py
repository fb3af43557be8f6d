"""Kafka stream workers: ingest (events -> windowed features online and offline, backfill,
import) and the drift monitor (prediction log -> drift statistics and alerts)."""

from __future__ import annotations

from streaming.errors import StreamingError
from streaming.ingest import Worker, backfill_from_log, backfill_from_topic, import_events
from streaming.monitor import Monitor
from streaming.topics import ensure_topic

__all__ = [
    "Monitor",
    "StreamingError",
    "Worker",
    "backfill_from_log",
    "backfill_from_topic",
    "ensure_topic",
    "import_events",
]
