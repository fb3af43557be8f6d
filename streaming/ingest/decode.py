"""Kafka messages -> validated columns, and a reason for every message that is not an event.

This is the one per-message Python loop of the worker: JSON parsing and type checks. Everything
after it works on whole columns (`featurestore.events.EventBatch`, what the writer applies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Message

from featurestore.definitions import KafkaSource, ValueType
from featurestore.events import EventBatch
from featurestore.timestamps import parse_timestamp
from streaming.consume import Rejected

__all__ = ["MAX_MESSAGE_BYTES", "Decoded", "Rejected", "decode"]

MAX_MESSAGE_BYTES = 1_000_000


@dataclass
class Decoded:
    """The valid events of a batch, and the Kafka messages they and the rejected ones came in."""

    events: EventBatch  # in consumption order
    messages: list[Message]  # the message of each event, for dead-lettering late ones
    rejected: list[Rejected] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events)


def decode(
    messages: list[Message], source: KafkaSource, max_bytes: int = MAX_MESSAGE_BYTES
) -> Decoded:
    """The events of `messages` per `source`'s schema; every other message with its reason."""
    schema = [
        (name, kind, _ACCEPTS[kind])
        for name, kind in source.schema_.items()
        if name != source.timestamp_field
    ]
    columns: dict[str, list[Any]] = {name: [] for name, _, _ in schema}
    ts: list[int] = []
    partitions: list[int] = []
    offsets: list[int] = []
    rejected: list[Rejected] = []
    kept: list[Message] = []
    for message in messages:
        value = message.value()
        if value is None or len(value) > max_bytes:
            size = 0 if value is None else len(value)
            rejected.append(
                Rejected(
                    message,
                    "oversized" if size else "malformed_json",
                    f"{size} bytes (limit {max_bytes})",
                )
            )
            continue
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            rejected.append(Rejected(message, "malformed_json", str(exc)))
            continue
        if not isinstance(event, dict):
            rejected.append(Rejected(message, "malformed_json", "not a JSON object"))
            continue
        problem = _check(event, schema)
        if problem is not None:
            rejected.append(Rejected(message, *problem))
            continue
        try:
            event_ts = parse_timestamp(event.get(source.timestamp_field))
        except ValueError as exc:
            rejected.append(Rejected(message, "bad_timestamp", str(exc)))
            continue
        for name, _, _ in schema:
            columns[name].append(event[name])
        ts.append(event_ts)
        partitions.append(message.partition() or 0)
        offsets.append(message.offset() or 0)
        kept.append(message)
    events = EventBatch(
        columns,
        np.array(ts, dtype=np.int64),
        np.array(partitions, dtype=np.int64),
        np.array(offsets, dtype=np.int64),
    )
    return Decoded(events, kept, rejected)


# One type test per declared type, chosen once per field rather than per event: this runs for
# every field of every message, the hottest Python in the worker.
_ACCEPTS: dict[ValueType, Callable[[object], bool]] = {
    ValueType.STRING: lambda v: type(v) is str,
    ValueType.INT64: lambda v: type(v) is int,
    ValueType.FLOAT64: lambda v: type(v) is float or type(v) is int,
    ValueType.BOOL: lambda v: type(v) is bool,
    ValueType.TIMESTAMP: lambda v: type(v) is str or type(v) is int,
}


def _check(
    event: dict[str, Any], schema: list[tuple[str, ValueType, Callable[[object], bool]]]
) -> tuple[str, str] | None:
    for name, kind, accepts in schema:
        value = event.get(name)
        if value is None:
            return "missing_field", f"field {name!r} is missing or null"
        if not accepts(value):
            return "wrong_type", f"field {name!r} should be {kind}, got {type(value).__name__}"
    return None
