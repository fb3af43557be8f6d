"""Durations as definitions write them ('30s', '10m', '1h', '7d') and their length in µs.

>>> duration_us("1h") == 3_600_000_000
True
"""

from __future__ import annotations

import re

__all__ = ["duration_us"]

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_US = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}


def duration_us(text: str) -> int:
    """'10m' -> microseconds. Units: ms, s, m, h, d, w."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like '30s', '10m', '1h', '7d'")
    if int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is empty; durations must be longer than zero")
    return int(match.group(1)) * _UNIT_US[match.group(2)]
