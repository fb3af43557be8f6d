"""One column's window against its reference profile: the statistics and a status.

The histograms compared by PSI and Jensen-Shannon carry one more bin than the profile's, the
missing values: a column that starts arriving empty (a broken feature pipeline) is drift too.
The KS statistic compares the present values only (missing values have no place in an order).

Status, from the thresholds: `insufficient` (fewer than `min_samples` rows: never drift),
`alert` (a statistic above its alert threshold), `warn` (PSI above `psi_warn`), else `ok`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from featurestore.config import DriftThresholds
from featurestore.drift.accumulator import Vector, bin_count, summarise
from featurestore.drift.statistics import js_distance, ks_binned, psi

__all__ = ["ALERT", "INSUFFICIENT", "OK", "WARN", "ColumnDrift", "check_reference", "compare"]

OK, WARN, ALERT, INSUFFICIENT = "ok", "warn", "alert", "insufficient"


@dataclass(frozen=True)
class ColumnDrift:
    n: int
    missing_rate: float | None
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    psi: float | None
    js: float | None
    ks: float | None
    status: str
    breaches: tuple[str, ...]  # the statistics above their alert thresholds

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["breaches"] = list(self.breaches)
        return out


def check_reference(column: dict[str, Any], name: str) -> None:
    """Refuse a profile column whose counts do not fit its edges (a corrupt or foreign profile)."""
    edges, counts = column.get("edges"), column.get("counts")
    if not isinstance(edges, list) or not isinstance(counts, list):
        raise ValueError(f"the reference profile of {name} lacks `edges` or `counts`")
    if len(counts) != bin_count(edges) or column.get("count", 0) < sum(counts):
        raise ValueError(
            f"the reference profile of {name} has {len(counts)} counts for {len(edges)} edges "
            f"(or more binned values than its count): retrain or re-profile the model"
        )


def compare(
    reference: dict[str, Any], window: Vector, thresholds: DriftThresholds, min_samples: int
) -> ColumnDrift:
    """The drift of a window's accumulator from a reference profile column."""
    live = summarise(window)
    ref_counts = np.asarray(reference["counts"], dtype=np.float64)
    ref_missing = float(reference["count"]) - ref_counts.sum()
    psi_value = js_value = ks_value = None
    status: str = INSUFFICIENT
    breaches: tuple[str, ...] = ()
    if live.n >= min_samples and reference["count"] > 0:
        with_missing_ref = np.append(ref_counts, ref_missing)
        with_missing_live = np.append(live.counts, live.missing)
        psi_value = psi(with_missing_ref, with_missing_live)
        js_value = js_distance(with_missing_ref, with_missing_live)
        if ref_counts.sum() > 0 and live.present > 0:
            ks_value = ks_binned(ref_counts, live.counts)
        breaches = _breaches(thresholds, psi_value, js_value, ks_value)
        status = ALERT if breaches else WARN if psi_value > thresholds.psi_warn else OK
    return ColumnDrift(
        n=live.n,
        missing_rate=live.missing_rate,
        mean=live.mean,
        std=live.std,
        min=live.min,
        max=live.max,
        psi=psi_value,
        js=js_value,
        ks=ks_value,
        status=status,
        breaches=breaches,
    )


def _breaches(
    thresholds: DriftThresholds, psi_value: float, js_value: float, ks_value: float | None
) -> tuple[str, ...]:
    found = []
    if psi_value > thresholds.psi_alert:
        found.append("psi")
    if thresholds.js_alert is not None and js_value > thresholds.js_alert:
        found.append("js")
    if thresholds.ks_alert is not None and ks_value is not None and ks_value > thresholds.ks_alert:
        found.append("ks")
    return tuple(found)
