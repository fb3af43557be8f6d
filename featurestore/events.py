"""A batch of decoded source events: what the writer applies, whatever they came from.

Kafka (`streaming.ingest.decode`), a file import and a replay of the offline log all hand the
writer this one shape, so how events are applied does not depend on where they were read.
Every event carries a (partition, offset): the writer's exactly-once check and the offline
log's dedup both rest on that pair.

What a value of each declared type may be is decided here too (`check_value`), and how far
ahead of the wall clock an event time may be (the source's `max_future`), for the stream and
the file import alike: a value that passes converts without error all the way to the tile
states (float64) and the log's Arrow column, so one bad event can never stop a batch. The
reasons a value fails are the dead-letter reasons `wrong_type`, `out_of_range` and
`bad_timestamp`; an event too far ahead is `future`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import isfinite
from typing import Any

import numpy as np
import numpy.typing as npt

from featurestore.definitions import DEFAULT_MAX_FUTURE, KafkaSource, ValueType
from featurestore.timestamps import TimestampOutOfRange, from_us, parse_timestamp, show

__all__ = [
    "FLOAT64_EXACT",
    "INT64_MAX",
    "INT64_MIN",
    "EventBatch",
    "Problem",
    "ValueRule",
    "VALUE_RULES",
    "check_value",
    "future_detail",
]

FLOAT64_EXACT = 2**53  # float64 holds every integer within ±2**53, and no odd one beyond
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Problem = tuple[str, str]  # (dead-letter reason, what is wrong with the value)
ValueRule = Callable[[object], Problem | None]


@dataclass
class EventBatch:
    """Events as columns, in consumption order (offsets ascend within each partition).

    `columns` holds the source's fields except its timestamp field, whose value is `ts`
    (epoch microseconds, UTC). A `timestamp` column other than that one holds the text the
    producer sent (epoch milliseconds as their digits), as the offline log keeps it.

    >>> batch = EventBatch({"user_id": ["u1", "u2"]}, np.array([10, 20]), np.zeros(2, int),
    ...                    np.array([7, 8]))
    >>> len(batch), batch.last_offsets()
    (2, {0: 8})
    """

    columns: dict[str, list[Any]]
    ts: npt.NDArray[np.int64]
    partition: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.ts)

    def last_offsets(self) -> dict[int, int]:
        """The newest offset of each partition in the batch."""
        out: dict[int, int] = {}
        for partition in np.unique(self.partition).tolist():
            out[partition] = int(self.offset[self.partition == partition].max())
        return out


def _string(value: object) -> Problem | None:
    return None if type(value) is str else _wrong(value, ValueType.STRING)


def _int64(value: object) -> Problem | None:
    if type(value) is not int:
        return _wrong(value, ValueType.INT64)
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return "out_of_range", f"holds {show(value)}, outside int64"


def _float64(value: object) -> Problem | None:
    # An int is a float64 only where the double is exactly that int: 2**53 + 1 would be
    # stored as 2**53 (pyarrow refuses it outright). JSON never gives a non-finite float;
    # a Parquet file may.
    if type(value) is float:
        return None if isfinite(value) else ("out_of_range", f"holds {value}, not finite")
    if type(value) is int:
        if -FLOAT64_EXACT <= value <= FLOAT64_EXACT:
            return None
        return "out_of_range", f"holds {show(value)}, not exactly a float64 (ints within ±2**53)"
    return _wrong(value, ValueType.FLOAT64)


def _bool(value: object) -> Problem | None:
    return None if type(value) is bool else _wrong(value, ValueType.BOOL)


def _timestamp(value: object) -> Problem | None:
    if type(value) is not str and type(value) is not int:
        return _wrong(value, ValueType.TIMESTAMP)
    try:
        parse_timestamp(value)
    except TimestampOutOfRange as exc:
        return "out_of_range", f"holds a {exc}"
    except ValueError as exc:
        return "bad_timestamp", f"holds a {exc}"
    return None


def _wrong(value: object, kind: ValueType) -> Problem:
    return "wrong_type", f"should be {kind}, got {type(value).__name__}"


# One rule per declared type, looked up once per field rather than per event: decoding calls
# them for every field of every message, the hottest Python of the worker. `type() is`, not
# isinstance: a bool is an int to Python, never a number here.
VALUE_RULES: dict[ValueType, ValueRule] = {
    ValueType.STRING: _string,
    ValueType.INT64: _int64,
    ValueType.FLOAT64: _float64,
    ValueType.BOOL: _bool,
    ValueType.TIMESTAMP: _timestamp,
}


def check_value(kind: ValueType, value: object) -> Problem | None:
    """Why `value` cannot be a `kind` column's value, or None when it can. (A timestamp
    column other than the event time holds the text the producer sent.)

    >>> check_value(ValueType.FLOAT64, 2**53), check_value(ValueType.FLOAT64, True)
    (None, ('wrong_type', 'should be float64, got bool'))
    >>> check_value(ValueType.FLOAT64, 2**53 + 1)[0], check_value(ValueType.INT64, 2**63)[0]
    ('out_of_range', 'out_of_range')
    """
    return VALUE_RULES[kind](value)


def future_detail(event_us: int, now_us: int, source: KafkaSource) -> str:
    """Why an event is `future`: its time is past `now_us + source.max_future_us`. Decoding
    compares inline (two integers per event) and calls this only for the events it rejects."""
    allowed = source.max_future or f"{DEFAULT_MAX_FUTURE} (the default)"
    return (
        f"event time {from_us(event_us).isoformat()} is {(event_us - now_us) // 1_000_000} s "
        f"ahead of the wall clock ({from_us(now_us).isoformat()}); source {source.name!r} "
        f"allows {allowed}"
    )
