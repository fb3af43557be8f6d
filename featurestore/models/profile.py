"""The reference profile a model's drift is measured against: its training data, summarised.

Per feature (and for the model's scores): bin edges at the training quantiles, the histogram
of the training values over those bins, the missing rate, and count/mean/std/min/max. The
profile is plain JSON, stored with the model version; the drift monitor bins live values with
the same edges (`bin_counts`) and compares histograms.

Bins: `edges` e0 < e1 < ... < ek (quantiles, duplicates removed) make k bins, [e0, e1), ...,
[e(k-1), ek]; a value below e0 counts in the first bin and one above ek in the last, so live
values outside the training range are never lost. A constant feature has one edge and one bin.
NaN is missing, counted in `missing_rate`, never in a bin.

>>> bin_counts([0.0, 1.0, 2.0], [-5.0, 0.0, 0.5, 1.0, 2.0, 9.0, float("nan")]).tolist()
[3, 3]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_BINS", "PROFILE_VERSION", "bin_counts", "column_profile", "reference_profile"]

DEFAULT_BINS = 10
PROFILE_VERSION = 1
Values = npt.NDArray[np.floating] | Sequence[float]


def reference_profile(
    features: Mapping[str, Values], scores: Values, bins: int = DEFAULT_BINS
) -> dict[str, Any]:
    """The profile of the training rows' features and the model's (validation) scores."""
    return {
        "version": PROFILE_VERSION,
        "bins": bins,
        "features": {name: column_profile(values, bins) for name, values in features.items()},
        "score": column_profile(scores, bins),
    }


def column_profile(values: Values, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Edges, counts and moments of one column; None where there are no values to summarise."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    array = np.asarray(values, dtype=np.float64)
    present = array[~np.isnan(array)]
    # Edges come from finite values only: an infinity would make every quantile above it inf.
    finite = present[np.isfinite(present)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1))) if finite.size else ()
    return {
        "edges": [float(edge) for edge in edges],
        "counts": bin_counts(edges, array).tolist(),
        "count": int(array.size),
        "missing_rate": (array.size - present.size) / array.size if array.size else 0.0,
        "mean": _stat(np.mean, finite),
        "std": _stat(np.std, finite),
        "min": _stat(np.min, finite),
        "max": _stat(np.max, finite),
    }


def bin_counts(edges: Values, values: Values) -> npt.NDArray[np.int64]:
    """How many non-missing `values` fall in each bin of `edges` (see the module docstring)."""
    edge_array = np.asarray(edges, dtype=np.float64)
    if edge_array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.any(np.diff(edge_array) <= 0):
        raise ValueError("bin edges must be strictly increasing")
    array = np.asarray(values, dtype=np.float64)
    present = array[~np.isnan(array)]
    # Interior edges only: everything below e1 is bin 0, everything at or above e(k-1) the last.
    index = np.searchsorted(edge_array[1:-1], present, side="right")
    return np.bincount(index, minlength=max(edge_array.size - 1, 1)).astype(np.int64)


def _stat(function: Any, values: npt.NDArray[np.float64]) -> float | None:
    return float(function(values)) if values.size else None
