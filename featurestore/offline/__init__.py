"""The offline store: the Parquet event log, point-in-time training sets and saved datasets."""

from __future__ import annotations

from featurestore.offline.compaction import CompactionReport, compact_due, compact_view
from featurestore.offline.log import OFFSET, PARTITION, TIMESTAMP, OfflineStore
from featurestore.offline.quarantine import Quarantined, quarantined_total

__all__ = [
    "OFFSET",
    "PARTITION",
    "TIMESTAMP",
    "CompactionReport",
    "OfflineStore",
    "Quarantined",
    "compact_due",
    "compact_view",
    "quarantined_total",
]
