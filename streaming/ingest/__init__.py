"""Ingest: Kafka events -> decoded batches -> the feature writer (Redis tiles + Parquet log)."""

from __future__ import annotations

from streaming.ingest.backfill import backfill_from_log, backfill_from_topic
from streaming.ingest.importer import import_events
from streaming.ingest.worker import Worker

__all__ = ["Worker", "backfill_from_log", "backfill_from_topic", "import_events"]
