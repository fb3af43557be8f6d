"""The offline store: the Parquet event log, point-in-time training sets and saved datasets."""

from __future__ import annotations

from featurestore.offline.log import OFFSET, PARTITION, TIMESTAMP, OfflineStore

__all__ = ["OFFSET", "PARTITION", "TIMESTAMP", "OfflineStore"]
