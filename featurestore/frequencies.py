"""`top_k`: the k most frequent values of a string column in a window, one rule online and
offline.

A tile counts its events per value (online: a Redis hash per tile, merged with HINCRBY, the same
structure as a percentile sketch's bucket counts, named by `value_counts`); a window's counts are
the sums over its tiles, and `top_values` picks the k most frequent — ties go to the smaller
value (code point order) — so the offline path, counting the window's values with the same
function, answers the same list.

>>> top_values({"b": 2, "a": 2, "c": 5, "d": 1}, 3)
['c', 'a', 'b']
>>> top_values({}, 3) is None
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = ["count_values", "top_values", "value_counts"]


def value_counts(column: str) -> str:
    """The sketch name (online/layout.py) of a column's per-tile value counts."""
    return f"{column}:values"


def top_values(counts: Mapping[str, int], k: int) -> list[str] | None:
    """The k values with the highest counts, highest first, ties by value; None when empty."""
    present = [(value, n) for value, n in counts.items() if n > 0]
    if not present:
        return None
    present.sort(key=lambda item: (-item[1], item[0]))
    return [value for value, _n in present[:k]]


def count_values(values: Iterable[str | None]) -> dict[str, int]:
    """How many times each value occurs (None skipped): a window's counts, offline."""
    return dict(Counter(v for v in values if v is not None))
