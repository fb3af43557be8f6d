"""Distances between a reference histogram and a live one, over the same bins.

Both inputs are counts per bin (the reference profile's `counts` and a window's). Every
statistic compares the two as proportions, so the totals may differ.

- PSI (population stability index): sum over bins of (live - ref) * ln(live / ref), natural
  log. An empty bin would make it infinite, so a proportion of 0 is replaced by `PSI_EPSILON`
  (1e-4, the usual choice) before the sum, without renormalising. Conventions: < 0.1 stable,
  0.1-0.25 moderate shift, > 0.25 major shift.
- Jensen-Shannon distance: the square root of the JS divergence with base-2 logarithms, so it
  lies in [0, 1] (0: same histogram, 1: disjoint). Empty bins need no smoothing (0 log 0 = 0).
  scipy's `jensenshannon` gives the same number with `base=2`.
- KS statistic, binned: the largest gap between the two cumulative histograms at the bin
  edges. The exact two-sample KS statistic is the largest gap over every value; the cumulative
  histograms agree with the empirical CDFs at the edges, so the binned statistic is the exact
  one restricted to the edges: never above it, and equal to it when the gap peaks at an edge.

>>> round(psi([50, 50], [50, 50]), 6), js_distance([1, 0], [0, 1]), ks_binned([1, 1], [2, 0])
(0.0, 1.0, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["PSI_EPSILON", "js_distance", "ks_binned", "psi"]

PSI_EPSILON = 1e-4
Counts = npt.NDArray[np.integer] | npt.NDArray[np.floating] | Sequence[float]


def psi(reference: Counts, live: Counts, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of `live` against `reference` (see the module docstring)."""
    ref, cur = _proportions(reference, live)
    ref = np.where(ref == 0, epsilon, ref)
    cur = np.where(cur == 0, epsilon, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def js_distance(reference: Counts, live: Counts) -> float:
    """Jensen-Shannon distance, base 2: in [0, 1]."""
    ref, cur = _proportions(reference, live)
    mid = (ref + cur) / 2
    divergence = (_kl_to(ref, mid) + _kl_to(cur, mid)) / 2
    # Rounding can leave a divergence of -1e-17 for equal histograms, or 1 + 1e-16.
    return float(np.sqrt(min(max(divergence, 0.0), 1.0)))


def ks_binned(reference: Counts, live: Counts) -> float:
    """Largest gap between the two cumulative histograms (the binned KS statistic)."""
    ref, cur = _proportions(reference, live)
    return float(np.max(np.abs(np.cumsum(ref) - np.cumsum(cur)), initial=0.0))


def _kl_to(p: npt.NDArray[np.float64], m: npt.NDArray[np.float64]) -> float:
    present = p > 0  # where p > 0, m >= p / 2 > 0
    return float(np.sum(p[present] * np.log2(p[present] / m[present])))


def _proportions(
    reference: Counts, live: Counts
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(live, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != cur.shape:
        raise ValueError(
            f"histograms must be 1-d with the same bins, got shapes {ref.shape} and {cur.shape}"
        )
    if (
        (ref < 0).any()
        or (cur < 0).any()
        or not (np.isfinite(ref).all() and np.isfinite(cur).all())
    ):
        raise ValueError("bin counts must be finite and non-negative")
    ref_total, cur_total = ref.sum(), cur.sum()
    if ref_total == 0 or cur_total == 0:
        raise ValueError(
            f"cannot compare an empty histogram (reference holds {ref_total:g} values, live "
            f"{cur_total:g}); windows without values are reported as insufficient"
        )
    return ref / ref_total, cur / cur_total
