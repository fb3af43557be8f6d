"""Redis's HyperLogLog, reproduced exactly, so an offline distinct count equals the online one.

Online, `approx_count_distinct` is a Redis HyperLogLog per tile, merged at read time (PFCOUNT of
several keys). Offline, the training set computes the same estimate from the same members: the
same hash (MurmurHash64A, seed 0xadc83b19), the same 16,384 registers (the low 14 bits pick the
register, the run of zeros in the other 50 bits plus one is its rank) and the same estimator
(Ertl's, as Redis's `hllCount`). A union of sketches keeps each register's highest rank, so the
estimate of a window depends only on its set of (register, rank) codes: offline, DuckDB gathers
the window's codes and `estimate` turns them into the number Redis answers.

The member a value adds is its `member` text, one rule for the writer and the offline query.

>>> estimate([]), estimate(code(member(ValueType.STRING, s)) for s in ["a", "b", "c", "a"])
(0, 3)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import lru_cache
from math import inf, sqrt

import numpy as np
import numpy.typing as npt

from featurestore.definitions import ValueType

__all__ = ["REGISTERS", "code", "estimate", "estimates", "member", "murmur64a"]

PRECISION = 14  # Redis's HLL_P
REGISTERS = 1 << PRECISION  # 16384
_Q = 64 - PRECISION  # bits left for the rank
_SEED = 0xADC83B19
_M = 0xC6A4A7935BD1E995
_MASK = (1 << 64) - 1
_ALPHA_INF = 0.721347520444481703680  # 0.5 / ln(2)


def member(kind: ValueType, value: object) -> str:
    """The text a value adds to the sketch: the same value gives the same text whatever JSON
    shape carried it (a float64 column's `5` and `5.0` are one member).

    >>> member(ValueType.FLOAT64, 5), member(ValueType.FLOAT64, 0.1), member(ValueType.BOOL, True)
    ('5.0', '0.1', 'true')
    """
    if kind is ValueType.FLOAT64:
        return repr(float(value))  # type: ignore[arg-type]
    if kind is ValueType.BOOL:
        return "true" if value else "false"
    return str(value)


def murmur64a(data: bytes, seed: int = _SEED) -> int:
    """MurmurHash64A, as Redis hashes a HyperLogLog member (little-endian blocks).

    >>> hex(murmur64a(b"hello"))
    '0xf656f01eecfe400'
    """
    length = len(data)
    h = (seed ^ (length * _M)) & _MASK
    blocks = length - (length & 7)
    for (k,) in struct.iter_unpack("<Q", data[:blocks]):
        k = (k * _M) & _MASK
        k ^= k >> 47
        k = (k * _M) & _MASK
        h ^= k
        h = (h * _M) & _MASK
    if length & 7:
        h ^= int.from_bytes(data[blocks:], "little")
        h = (h * _M) & _MASK
    h ^= h >> 47
    h = (h * _M) & _MASK
    h ^= h >> 47
    return h


@lru_cache(maxsize=1 << 16)  # a column repeats its values
def code(text: str) -> int:
    """A member's register and rank as one number, `register * 64 + rank` (Redis's hllPatLen).

    >>> divmod(code("hello"), 64)
    (9216, 1)
    """
    h = murmur64a(text.encode())
    register = h & (REGISTERS - 1)
    rest = (h >> PRECISION) | (1 << _Q)  # the sentinel bit bounds the rank at Q + 1
    rank = (rest & -rest).bit_length()  # position of the lowest set bit, from 1
    return register * 64 + rank


def estimate(codes: Iterable[int]) -> int:
    """The cardinality Redis's PFCOUNT answers for a sketch (or a union of sketches) holding
    these codes."""
    flat = np.fromiter(codes, dtype=np.int64)
    return int(estimates(np.zeros(len(flat), dtype=np.int64), flat, 1)[0])


def estimates(
    rows: npt.NDArray[np.int64], codes: npt.NDArray[np.int64], n_rows: int
) -> npt.NDArray[np.int64]:
    """`estimate` of each row's codes at once: `rows[i]` is the row (0 to n_rows - 1) that
    `codes[i]` belongs to."""
    # Each (row, register) keeps its highest rank: sorted as one number (row, code), the last
    # of each (row, register) run is it. Codes fit in 20 bits (register * 64 + rank).
    keys = np.sort((rows << 20) | codes)
    last = np.ones(len(keys), dtype=bool)
    last[:-1] = (keys[1:] >> 6) != (keys[:-1] >> 6)
    kept = keys[last]
    width = _Q + 2
    slots = (kept >> 20) * width + (kept & 63)
    histogram = np.bincount(slots, minlength=n_rows * width).reshape(n_rows, width)
    histogram[:, 0] = REGISTERS - histogram[:, 1:].sum(axis=1)
    return _count(histogram)


def _count(histogram: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Redis's hllCount per row of rank histograms: Ertl's improved estimator, with the same
    floating-point steps in the same order (so the same rounding)."""
    m = float(REGISTERS)
    z = m * np.array([_tau((m - float(h)) / m) for h in histogram[:, _Q + 1].tolist()])
    for j in range(_Q, 0, -1):
        z += histogram[:, j]
        z *= 0.5
    z += m * np.array([_sigma(float(h) / m) for h in histogram[:, 0].tolist()])
    with np.errstate(divide="ignore"):
        value = _ALPHA_INF * m * m / z  # an empty sketch: sigma(1) = inf, so 0
    return np.floor(value + 0.5).astype(np.int64)  # llroundl of a value >= 0


@lru_cache(maxsize=REGISTERS + 1)
def _sigma(x: float) -> float:
    if x == 1.0:
        return inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if previous == z:
            return z


@lru_cache(maxsize=REGISTERS + 1)
def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if previous == z:
            return z / 3.0
