"""Drift of live data from a model's training data: statistics on binned histograms, mergeable
window accumulators, and the Redis state the monitor (`fstore monitor`) keeps for the API."""

from __future__ import annotations

from featurestore.drift.accumulator import (
    ColumnSummary,
    accumulate,
    accumulate_groups,
    merge,
    summarise,
)
from featurestore.drift.compare import ColumnDrift, compare
from featurestore.drift.state import latest_drift
from featurestore.drift.statistics import PSI_EPSILON, js_distance, ks_binned, psi

__all__ = [
    "PSI_EPSILON",
    "ColumnDrift",
    "ColumnSummary",
    "accumulate",
    "accumulate_groups",
    "compare",
    "js_distance",
    "ks_binned",
    "latest_drift",
    "merge",
    "psi",
    "summarise",
]
