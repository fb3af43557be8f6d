"""The offline store: the Parquet event log, point-in-time training sets and saved datasets."""

from __future__ import annotations

from featurestore.offline.log import OFFSET, PARTITION, TIMESTAMP, OfflineStore
from featurestore.offline.quarantine import Quarantined, quarantined_total

__all__ = [
    "OFFSET",
    "PARTITION",
    "TIMESTAMP",
    "OfflineStore",
    "Quarantined",
    "quarantined_total",
]
