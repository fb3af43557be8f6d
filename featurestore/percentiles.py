"""`approx_percentile`'s sketch: DDSketch's logarithmic buckets, one rule for online and offline.

A value x maps to an integer bucket key (`bucket_keys`, vectorized); a tile keeps how many of its
events fell in each key (online: a Redis hash per tile, merged with HINCRBY — integer sums, so
exact and order-free); a window's sketch is the sum of its tiles' counts, and `quantile` turns
merged counts into a value. Offline the training set computes the same keys with the same
function and the same `quantile` (offline/sketches.py), so both sides answer the same float.

The mapping is DDSketch's `LogarithmicMapping` (Masson, Rim and Lee, VLDB 2019; the `ddsketch`
package, Apache-2.0): γ = (1 + α)/(1 − α), key(x) = ⌈log_γ |x|⌉, and a key stands for
2·γ^key/(1 + γ), within a relative α of every x in (γ^(key−1), γ^key]. Written here in numpy
because the package maps one value per Python call; tests/featurestore/test_percentiles.py holds
the two to the same keys. Signs and zero share one int64 key space that sorts as the values do:
a positive x is `OFFSET + key`, a negative one `-(OFFSET + key(|x|))`, zero (and |x| below
DDSketch's smallest distinguishable value, 2.2e-308·γ) is 0.

The q-quantile is the bucket of the element of rank ⌊q·(n − 1)⌋ (0-based) among the n values:
so it is within α (relative) of that exact order statistic, the guarantee docs/semantics.md
states.

>>> keys = bucket_keys(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), 0.01)
>>> round(quantile(*np.unique(keys, return_counts=True), 0.5, 0.01), 6)
2.974233
"""

from __future__ import annotations

import math
import sys

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_ACCURACY",
    "OFFSET",
    "bucket_keys",
    "bucket_value",
    "quantile",
    "quantile_of_keys",
    "quantiles_of_rows",
]

DEFAULT_ACCURACY = 0.01
# Far above any key: log_γ of the largest double is < 2**31 for α >= 1e-6 (definitions.py
# accepts α >= 1e-4), so positive keys stay above 0 and negatives below it.
OFFSET = 1 << 40


def _mapping(alpha: float) -> tuple[float, float, float, float]:
    """DDSketch's (γ, multiplier of log2, smallest distinguishable |x|, largest mapped |x|)."""
    mantissa = 2 * alpha / (1 - alpha)
    gamma = 1 + mantissa
    multiplier = math.log(2) / math.log1p(mantissa)
    return gamma, multiplier, sys.float_info.min * gamma, sys.float_info.max / gamma


def bucket_keys(values: npt.NDArray[np.float64], alpha: float) -> npt.NDArray[np.int64]:
    """The bucket key of each value (finite floats; the event rules reject the others). |x|
    beyond DDSketch's largest (1.8e308/γ) counts as that largest: its bucket's value must be a
    finite float."""
    _gamma, multiplier, smallest, largest = _mapping(alpha)
    size = np.minimum(np.abs(values), largest)
    present = size >= smallest
    with np.errstate(divide="ignore"):
        logs = np.ceil(np.log2(np.where(present, size, 1.0)) * multiplier)
    keys = np.where(present, logs.astype(np.int64) + OFFSET, 0)
    return np.where(values < 0, -keys, keys).astype(np.int64)


def bucket_value(keys: npt.NDArray[np.int64], alpha: float) -> npt.NDArray[np.float64]:
    """The value each key stands for (DDSketch's `value`: 2·γ^k/(1 + γ), signed)."""
    gamma, multiplier, _smallest, _largest = _mapping(alpha)
    k = np.abs(keys) - OFFSET
    magnitude = np.power(2.0, k / multiplier) * (2.0 / (1 + gamma))
    return np.where(keys == 0, 0.0, np.where(keys < 0, -magnitude, magnitude))


def quantile(
    keys: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], q: float, alpha: float
) -> float:
    """The q-quantile of a sketch given as keys (any order) and their counts; NaN when empty."""
    present = counts > 0
    keys, counts = keys[present], counts[present]
    if not len(keys):
        return math.nan
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    total = int(counts.sum())
    rank = math.floor(q * (total - 1))
    at = int(np.searchsorted(np.cumsum(counts), rank, side="right"))
    return float(bucket_value(keys[at : at + 1], alpha)[0])


def quantile_of_keys(keys: npt.NDArray[np.int64], q: float, alpha: float) -> float:
    """`quantile` of the sketch that holds these keys once per value (the offline side)."""
    unique, counts = np.unique(keys, return_counts=True)
    return quantile(unique, counts.astype(np.int64), q, alpha)


def quantiles_of_rows(
    rows: npt.NDArray[np.int64], keys: npt.NDArray[np.int64], n_rows: int, q: float, alpha: float
) -> npt.NDArray[np.float64]:
    """`quantile` of many sketches at once: `keys[i]` is one value's key in row `rows[i]`'s
    sketch. The element of rank ⌊q·(n − 1)⌋ in key order lies in the first bucket whose
    cumulative count passes that rank, so this answers what `quantile` answers. NaN for a row
    without keys."""
    order = np.lexsort((keys, rows))
    sorted_rows, sorted_keys = rows[order], keys[order]
    sizes = np.bincount(sorted_rows, minlength=n_rows)
    starts = np.cumsum(sizes) - sizes
    out = np.full(n_rows, np.nan)
    some = sizes > 0
    ranks = np.floor(q * (sizes[some] - 1)).astype(np.int64)
    out[some] = bucket_value(sorted_keys[starts[some] + ranks], alpha)
    return out
