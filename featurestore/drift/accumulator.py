"""Window accumulators: what a window of one column needs for its drift, in one float vector.

Layout: [n, missing, finite, sum, sum of squares, min, max, count of bin 0, ..., bin k-1].
`n` counts every row, `missing` the NaNs (nulls), the bins every non-missing value (binned as
`featurestore.models.profile.bin_counts` does, with the reference profile's edges), and the
moments the finite values. Two accumulators of one column merge field by field: min for min,
max for max, addition for the rest — so windows combine in any order and grouping (a sliding
window is the merge of its tumbling windows), and a batch's accumulator merges into the stored
one in Redis (the Lua merge applies the same rule).

The standard deviation comes from the sum and the sum of squares, which is exact enough for
drift (features of a few orders of magnitude) and keeps the merge a plain sum.

>>> vector = accumulate([0.0, 1.0, 2.0], [0.5, 1.5, float("nan")])
>>> vector.tolist()
[3.0, 1.0, 2.0, 2.0, 2.5, 0.5, 1.5, 1.0, 1.0]
>>> merge(vector, vector)[:3].tolist()
[6.0, 2.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "HEADER",
    "ColumnSummary",
    "accumulate",
    "accumulate_groups",
    "bin_count",
    "empty",
    "merge",
    "merge_all",
    "summarise",
]

N, MISSING, FINITE, SUM, SUMSQ, MIN, MAX = range(7)
HEADER = 7  # fields before the bin counts
Vector = npt.NDArray[np.float64]
Values = npt.NDArray[np.floating] | Sequence[float]


def bin_count(edges: Sequence[float]) -> int:
    """How many bins `edges` make (a constant column: one edge, one bin; none: no bins)."""
    return max(len(edges) - 1, 1) if len(edges) else 0


def empty(bins: int) -> Vector:
    vector = np.zeros(HEADER + bins)
    vector[MIN], vector[MAX] = np.inf, -np.inf
    return vector


def accumulate(edges: Sequence[float], values: Values) -> Vector:
    """The accumulator of `values` binned by `edges`."""
    array = np.asarray(values, dtype=np.float64)
    vectors = accumulate_groups(edges, array, np.zeros(array.size, dtype=np.int64), 1)
    return np.asarray(vectors[0], dtype=np.float64)


def accumulate_groups(
    edges: Sequence[float], values: Values, groups: npt.NDArray[np.integer], count: int
) -> npt.NDArray[np.float64]:
    """One accumulator per group (rows: groups 0..count-1; `groups[i]` is row i's group)."""
    array = np.asarray(values, dtype=np.float64)
    bins = bin_count(edges)
    out = np.zeros((count, HEADER + bins))
    out[:, N] = np.bincount(groups, minlength=count)
    present = ~np.isnan(array)
    out[:, MISSING] = out[:, N] - np.bincount(groups[present], minlength=count)
    if bins:
        edge_array = np.asarray(edges, dtype=np.float64)
        # Interior edges only: below e1 is bin 0, at or above e(k-1) the last (see profile.py).
        index = np.searchsorted(edge_array[1:-1], array[present], side="right")
        cells = np.bincount(groups[present] * bins + index, minlength=count * bins)
        out[:, HEADER:] = cells.reshape(count, bins)
    finite = np.isfinite(array)
    group, value = groups[finite], array[finite]
    out[:, FINITE] = np.bincount(group, minlength=count)
    out[:, SUM] = np.bincount(group, weights=value, minlength=count)
    out[:, SUMSQ] = np.bincount(group, weights=value * value, minlength=count)
    low, high = np.full(count, np.inf), np.full(count, -np.inf)
    np.minimum.at(low, group, value)
    np.maximum.at(high, group, value)
    out[:, MIN], out[:, MAX] = low, high
    return out


def merge(a: Vector, b: Vector) -> Vector:
    """The accumulator of both windows' rows."""
    if a.shape != b.shape:
        raise ValueError(f"cannot merge accumulators of {a.size} and {b.size} fields")
    out = a + b
    out[MIN] = min(a[MIN], b[MIN])
    out[MAX] = max(a[MAX], b[MAX])
    return out


def merge_all(vectors: Iterable[Vector], bins: int) -> Vector:
    out = empty(bins)
    for vector in vectors:
        out = merge(out, vector)
    return out


@dataclass(frozen=True)
class ColumnSummary:
    """What an accumulator says in words: rows, missing rate, moments, the histogram."""

    n: int
    missing: int
    missing_rate: float | None
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    counts: npt.NDArray[np.int64]

    @property
    def present(self) -> int:
        return self.n - self.missing


def summarise(vector: Vector) -> ColumnSummary:
    n, missing, finite = int(vector[N]), int(vector[MISSING]), int(vector[FINITE])
    mean = std = None
    if finite:
        mean = float(vector[SUM] / finite)
        # Clamped: rounding can make E[x^2] - E[x]^2 a hair below zero for a constant column.
        std = float(np.sqrt(max(vector[SUMSQ] / finite - mean * mean, 0.0)))
    return ColumnSummary(
        n=n,
        missing=missing,
        missing_rate=missing / n if n else None,
        mean=mean,
        std=std,
        min=float(vector[MIN]) if finite else None,
        max=float(vector[MAX]) if finite else None,
        counts=vector[HEADER:].astype(np.int64),
    )
