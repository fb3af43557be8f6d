"""Event times as integer microseconds since the epoch, UTC — the one representation inside.

>>> to_us(from_us(1_767_225_600_000_001)) == 1_767_225_600_000_001
True
>>> parse_timestamp("2026-01-01T01:00:00+01:00") == parse_timestamp(1_767_225_600_000)
True
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "EPOCH",
    "from_us",
    "parse_iso",
    "parse_timestamp",
    "to_us",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(when: datetime) -> int:
    """An aware datetime -> microseconds. Naive datetimes are refused, never guessed."""
    if when.tzinfo is None:
        raise ValueError(f"{when.isoformat()} has no timezone; pass an aware (UTC) datetime")
    return (when - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def parse_timestamp(value: object) -> int:
    """A source's timestamp field: ISO 8601 with an offset, or epoch milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"timestamp {value} is before 1970")
        return value * 1000
    if isinstance(value, str):
        micros = parse_iso(value)
        if micros < 0:
            raise ValueError(f"timestamp {value!r} is before 1970")
        return micros
    raise ValueError(f"timestamp {value!r} is neither an ISO 8601 string nor epoch milliseconds")


def parse_iso(value: str) -> int:
    """An ISO 8601 time with an offset, as microseconds; a time without one is refused."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"timestamp {value!r} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no UTC offset; add 'Z' or '+00:00'")
    return to_us(parsed)
