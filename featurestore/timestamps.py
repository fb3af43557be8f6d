"""Event times as integer microseconds since the epoch, UTC — the one representation inside.

Every event time is in `[MIN_US, MAX_US)`: 1970-01-01T00:00:00Z up to (not including)
2200-01-01T00:00:00Z. The upper end keeps a time exact where it travels as a float64 (tile
states and the Lua merge hold event times in doubles, exact below 2**53 µs, mid-2255), keeps
tile arithmetic in int64 far from overflow, and stays inside what Python's `datetime` and the
offline log's `date=` folders can spell. A time outside the range is `TimestampOutOfRange`.

>>> to_us(from_us(1_767_225_600_000_001)) == 1_767_225_600_000_001
True
>>> parse_timestamp("2026-01-01T01:00:00+01:00") == parse_timestamp(1_767_225_600_000)
True
>>> try:
...     parse_timestamp(9_007_199_254_740_993)
... except TimestampOutOfRange as exc:
...     print(exc)
timestamp 9007199254740993 (epoch ms) is after 2200-01-01
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "EPOCH",
    "MAX_US",
    "MIN_US",
    "TimestampOutOfRange",
    "check_range",
    "from_us",
    "parse_iso",
    "parse_timestamp",
    "show",
    "to_us",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
MIN_US = 0  # 1970-01-01T00:00:00Z
MAX_US = 7_258_118_400_000_000  # 2200-01-01T00:00:00Z, excluded; < 2**53
_MAX_MS = MAX_US // 1000
_SHOWN = 40  # characters of a bad value quoted in an error (it may be a megabyte of text)


class TimestampOutOfRange(ValueError):
    """A well-formed time outside `[MIN_US, MAX_US)`: a dead letter says `out_of_range`."""


def to_us(when: datetime) -> int:
    """An aware datetime -> microseconds. Naive datetimes are refused, never guessed."""
    if when.tzinfo is None:
        raise ValueError(f"{when.isoformat()} has no timezone; pass an aware (UTC) datetime")
    return (when - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def check_range(us: int, shown: str = "") -> int:
    """`us` when it is an event time this system can hold; `TimestampOutOfRange` otherwise.
    `shown` is the time as the producer wrote it, for the message.

    >>> check_range(MAX_US - 1) == MAX_US - 1
    True
    >>> try:
    ...     check_range(-1, "'1969-12-31T23:59:59.999999Z'")
    ... except TimestampOutOfRange as exc:
    ...     print(exc)
    timestamp '1969-12-31T23:59:59.999999Z' is before 1970
    """
    if MIN_US <= us < MAX_US:
        return us
    where = "before 1970" if us < MIN_US else "after 2200-01-01"
    raise TimestampOutOfRange(f"timestamp {shown or f'{us} µs'} is {where}")


def parse_timestamp(value: object) -> int:
    """A source's timestamp field: ISO 8601 with an offset, or epoch milliseconds (an integer,
    not a bool or a float), within `[MIN_US, MAX_US)`.

    Whatever `value` is, the only exception is a `ValueError` (or its `TimestampOutOfRange`).
    """
    if type(value) is int:
        if 0 <= value < _MAX_MS:  # compared before multiplying: any size of int costs the same
            return value * 1000
        return check_range(-1 if value < 0 else MAX_US, f"{show(value)} (epoch ms)")
    if type(value) is str:
        micros = parse_iso(value)
        if MIN_US <= micros < MAX_US:  # the message only when it fails: this runs per event
            return micros
        return check_range(micros, show(value))
    raise ValueError(
        f"timestamp {show(value)} is neither an ISO 8601 string nor epoch milliseconds"
    )


def parse_iso(value: str) -> int:
    """An ISO 8601 time with an offset, as microseconds; a time without one is refused."""
    try:
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"timestamp {show(value)} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {show(value)} has no UTC offset; add 'Z' or '+00:00'")
    try:
        return to_us(parsed)
    except OverflowError as exc:  # an offset that takes the time past year 1 or 9999
        raise TimestampOutOfRange(f"timestamp {show(value)} is out of range") from exc


def show(value: object) -> str:
    """A producer's value, short, for an error message: it travels in a dead-letter header, and
    may be a megabyte of text, an integer of any size or an array nested a thousand deep.

    >>> show("x" * 100), show(2**70), show([[1]]), show(1.5)
    ("'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...", 'an integer of 22 digits', 'a list', '1.5')
    """
    if type(value) is str:
        return repr(value[:_SHOWN]) + ("..." if len(value) > _SHOWN else "")
    if type(value) is int and value.bit_length() > 64:
        return f"an integer of {len(str(value)) if value.bit_length() < 10_000 else 'many'} digits"
    if value is None or type(value) in (int, float, bool):
        return repr(value)
    return f"a {type(value).__name__}"
