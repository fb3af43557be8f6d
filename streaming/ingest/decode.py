"""Kafka messages -> validated columns, and a reason for every message that is not an event.

This is the one per-message Python loop of the worker: JSON parsing and type checks. Everything
after it works on whole columns (`featurestore.events.EventBatch`, what the writer applies).

Decoding is total: whatever bytes a producer sends, a message ends as an event whose every
value converts without error into tile states and the offline log's Arrow columns, or as a
`Rejected` with its reason — `malformed_json`, `oversized`, `missing_field`, `wrong_type`,
`out_of_range` (a number or time the column cannot hold, `featurestore.events.check_value`),
`bad_timestamp`, or `future` (an event time more than the source's `max_future` ahead of the
wall clock, read once per batch). Nothing raises out of `decode`; a rejected event never
reaches the writer, so it never moves a watermark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Message

from featurestore.definitions import KafkaSource, ValueType
from featurestore.events import VALUE_RULES, EventBatch, ValueRule, future_detail
from featurestore.timestamps import TimestampOutOfRange, parse_timestamp, to_us
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
    messages: list[Message],
    source: KafkaSource,
    max_bytes: int = MAX_MESSAGE_BYTES,
    now_us: int | None = None,
) -> Decoded:
    """The events of `messages` per `source`'s schema; every other message with its reason.

    `now_us` is the wall clock the `future` rule measures from (default: now, read once).
    """
    schema = [
        (name, VALUE_RULES[kind])
        for name, kind in source.schema_.items()
        if name != source.timestamp_field
    ]
    # A timestamp column other than the event time keeps the text the producer sent: an epoch
    # ms integer becomes its digits (the log's column is a string).
    stamps = [
        name
        for name, kind in source.schema_.items()
        if kind is ValueType.TIMESTAMP and name != source.timestamp_field
    ]
    if now_us is None:
        now_us = to_us(datetime.now(UTC))
    newest = now_us + source.max_future_us
    columns: dict[str, list[Any]] = {name: [] for name, _ in schema}
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
        if type(event) is not dict:
            rejected.append(Rejected(message, "malformed_json", "not a JSON object"))
            continue
        problem = _check(event, schema)
        if problem is not None:
            rejected.append(Rejected(message, *problem))
            continue
        try:
            event_ts = parse_timestamp(event.get(source.timestamp_field))
        except TimestampOutOfRange as exc:
            rejected.append(Rejected(message, "out_of_range", str(exc)))
            continue
        except ValueError as exc:
            rejected.append(Rejected(message, "bad_timestamp", str(exc)))
            continue
        if event_ts > newest:
            rejected.append(Rejected(message, "future", future_detail(event_ts, now_us, source)))
            continue
        if stamps:
            for name in stamps:
                event[name] = str(event[name])
        for name, _ in schema:
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


def _check(event: dict[str, Any], schema: list[tuple[str, ValueRule]]) -> tuple[str, str] | None:
    for name, rule in schema:
        value = event.get(name)
        if value is None:
            return "missing_field", f"field {name!r} is missing or null"
        problem = rule(value)
        if problem is not None:
            return problem[0], f"field {name!r} {problem[1]}"
    return None
