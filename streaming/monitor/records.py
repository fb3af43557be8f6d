"""Prediction-log and label messages -> columns the monitor works on, and a reason for each
message that is not a valid record (dead-lettered, as the ingest worker does). What a
prediction-log record holds is featurestore/prediction_records.py's, which the serving app
writes with.

The one per-message Python loop of the monitor: JSON parsing and a few type checks. A
record's features are read in its model version's profile order; a null feature is missing
(NaN). Records of a model version with no reference profile are counted and skipped: there
is nothing to compare them with (`fstore train` profiles every model it registers). Records
whose features the caller sent (`request_features`) are counted and skipped too, unless
`monitor.include_request_features`: a caller could otherwise feed the drift and performance
statistics — and the alerts and retraining hooks behind them — values of its own choosing.

Decoding is total, as the ingest worker's is: whatever a producer sends, a message ends as a
record or as a `Rejected` (`malformed_json`, `oversized`, `missing_field`, `wrong_type`,
`out_of_range` for a number or a time outside what the monitor can hold — times follow
`featurestore.timestamps`' range —, `bad_timestamp`). Request ids and entity keys go into the
label index's tab- and line-separated text (labels.py), so their separators are escaped here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import orjson
from confluent_kafka import Message

from featurestore.definitions import ValueType
from featurestore.events import check_value
from featurestore.keys import entity_key
from featurestore.prediction_records import (
    MalformedRecord,
    PredictionRecord,
    feature_row,
    read_record,
    request_fed,
)
from featurestore.tiles import I64
from featurestore.timestamps import TimestampOutOfRange, parse_timestamp, show
from streaming.consume import Rejected
from streaming.ingest.decode import MAX_MESSAGE_BYTES

__all__ = [
    "Labels",
    "Predictions",
    "SeriesKey",
    "decode_labels",
    "decode_predictions",
    "join_key",
]

log = logging.getLogger("fstore.monitor")

SeriesKey = tuple[str, int, str]  # (model, version, role)
# The feature names of a model version in profile order, or None when it cannot be monitored.
Names = Callable[[str, int], tuple[str, ...] | None]


@dataclass
class Predictions:
    """The valid records of a batch, in consumption order, with their series' rows."""

    ts: I64
    partition: I64
    offset: I64
    series: I64  # index into `keys`
    keys: list[SeriesKey]
    rows: list[list[list[Any]]]  # per series: per record, its feature values then its score
    position: I64  # each record's row in its series' `rows`
    # For the label join (only when asked): request id, entity key and score of each record.
    requests: list[tuple[str, str, float]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unmonitored: int = 0  # records of model versions without a reference profile
    request_fed: int = 0  # records with caller-sent features, left out

    def __len__(self) -> int:
        return len(self.ts)


def join_key(entities: dict[str, Any]) -> str:
    """One string per entity row, the same for a prediction and its label: its `key=value` pairs
    by key, as an entity key (featurestore.keys), so a `|` in a value cannot make two entities
    meet. Rows without `|` or `\\` keep the key they had before that escaping (stored indexes
    still match).

    Tabs and line breaks are escaped too (after the backslashes, so keys stay distinct): the
    key is a field of the label index's lines. A value that is not a scalar has no key
    (`ValueError`): the record is dead-lettered as `wrong_type`.

    >>> join_key({"user_id": "u1", "card": 7})
    'card=7|user_id=u1'
    >>> join_key({"user_id": "u1|card=7"}) != join_key({"user_id": "u1", "card": 7})
    True
    >>> join_key({"user_id": "a" + chr(9) + "b"})
    'user_id=a\\\\x09b'
    """
    for value in entities.values():
        if value is not None and type(value) not in _SCALARS:
            raise ValueError(f"entity values must be strings or numbers, got {show(value)}")
    return entity_key([f"{key}={entities[key]}" for key in sorted(entities)]).translate(_LINES)


def _request_id(value: object) -> str:
    """A request id as the label index spells it: backslashes, tabs and line breaks escaped;
    anything but a string is no id ("")."""
    if type(value) is not str:
        return ""
    return value.replace("\\", "\\\\").translate(_LINES) if _needs_escape(value) else value


def _needs_escape(text: str) -> bool:
    return "\\" in text or any(c in text for c in _LINES_TEXT)


_SCALARS = (str, int, float, bool)
# What str.splitlines() splits on, and the tab that separates a line's fields.
_LINES_TEXT = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LINES = str.maketrans(
    {c: f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}" for c in _LINES_TEXT}
)


def decode_predictions(
    messages: list[Message],
    names: Names,
    keep_requests: bool,
    max_bytes: int = MAX_MESSAGE_BYTES,
    include_request_features: bool = False,
) -> Predictions:
    ts: list[int] = []
    partitions: list[int] = []
    offsets: list[int] = []
    series: list[int] = []
    position: list[int] = []
    keys: dict[SeriesKey, int] = {}
    rows: list[list[list[Any]]] = []
    series_names: list[tuple[str, ...]] = []
    requests: list[tuple[str, str, float]] = []
    rejected: list[Rejected] = []
    times: dict[str, int] = {}  # the records of one request share their `at`
    unmonitored = fed = 0
    for message in messages:
        value = _json(message, max_bytes, rejected)
        if value is None:
            continue
        try:
            model, version, role, features, score, at = read_record(value)
            if not include_request_features and request_fed(value):
                fed += 1
                continue
        except MalformedRecord as exc:
            rejected.append(Rejected(message, exc.reason, str(exc)))
            continue
        micros = times.get(at) if type(at) is str else None
        if micros is None:
            parsed = _micros(at)
            if isinstance(parsed, tuple):
                rejected.append(Rejected(message, *parsed))
                continue
            micros = times[at] = parsed
        key = (model, version, role)
        index = keys.get(key)
        if index is None:
            columns = names(model, version)
            if columns is None:
                unmonitored += 1
                continue
            index = keys[key] = len(rows)
            rows.append([])
            series_names.append(columns)
        try:
            row: list[Any] = feature_row(features, series_names[index])
        except MalformedRecord as exc:
            rejected.append(Rejected(message, exc.reason, str(exc)))
            continue
        request: tuple[str, str, float] | None = None
        if keep_requests:
            record = cast(PredictionRecord, value)  # the label join takes what it finds
            entities = record.get("entities")
            try:
                entity = join_key(entities) if type(entities) is dict else ""
            except ValueError as exc:
                rejected.append(Rejected(message, "wrong_type", str(exc)))
                continue
            request = (_request_id(record.get("request_id")), entity, float(score))
        row.append(score)
        series.append(index)
        position.append(len(rows[index]))
        rows[index].append(row)
        ts.append(micros)
        partitions.append(message.partition() or 0)
        offsets.append(message.offset() or 0)
        if request is not None:
            requests.append(request)
    return Predictions(
        np.array(ts, dtype=np.int64),
        np.array(partitions, dtype=np.int64),
        np.array(offsets, dtype=np.int64),
        np.array(series, dtype=np.int64),
        list(keys),
        rows,
        np.array(position, dtype=np.int64),
        requests,
        rejected,
        unmonitored,
        fed,
    )


@dataclass
class Labels:
    """Valid label records: {"request_id" and/or "entities", "label", "at"}."""

    ts: I64
    partition: I64
    offset: I64
    records: list[tuple[str, str, float]]  # (request id or "", entity key or "", label)
    rejected: list[Rejected] = field(default_factory=list)


def decode_labels(messages: list[Message], max_bytes: int = MAX_MESSAGE_BYTES) -> Labels:
    ts: list[int] = []
    partitions: list[int] = []
    offsets: list[int] = []
    records: list[tuple[str, str, float]] = []
    rejected: list[Rejected] = []
    for message in messages:
        record = _json(message, max_bytes, rejected)
        if record is None:
            continue
        request, entities, label = (
            record.get("request_id"),
            record.get("entities"),
            record.get("label"),
        )
        if not (isinstance(request, str) and request) and not (
            isinstance(entities, dict) and entities
        ):
            rejected.append(
                Rejected(
                    message,
                    "missing_field",
                    "a label needs `request_id` (a string) or `entities` (join key -> value)",
                )
            )
            continue
        problem = check_value(ValueType.FLOAT64, label)
        if problem is not None:
            reason, detail = problem
            shown = f"{show(label)} is not a number" if reason == "wrong_type" else detail
            rejected.append(Rejected(message, reason, f"label {shown}"))
            continue
        at = _micros(record.get("at"))
        if isinstance(at, tuple):
            rejected.append(Rejected(message, *at))
            continue
        try:
            entity = join_key(entities) if isinstance(entities, dict) and entities else ""
        except ValueError as exc:
            rejected.append(Rejected(message, "wrong_type", str(exc)))
            continue
        records.append((_request_id(request), entity, float(cast(float, label))))
        ts.append(at)
        partitions.append(message.partition() or 0)
        offsets.append(message.offset() or 0)
    return Labels(
        np.array(ts, dtype=np.int64),
        np.array(partitions, dtype=np.int64),
        np.array(offsets, dtype=np.int64),
        records,
        rejected,
    )


def _json(message: Message, max_bytes: int, rejected: list[Rejected]) -> dict[str, Any] | None:
    value = message.value()
    if value is None or len(value) > max_bytes:
        size = 0 if value is None else len(value)
        reason = "oversized" if size else "malformed_json"
        rejected.append(Rejected(message, reason, f"{size} bytes (limit {max_bytes})"))
        return None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        rejected.append(Rejected(message, "malformed_json", str(exc)))
        return None
    if not isinstance(record, dict):
        rejected.append(Rejected(message, "malformed_json", "not a JSON object"))
        return None
    return record


def _micros(value: object) -> int | tuple[str, str]:
    """A record's `at` as microseconds, or the reason and detail it is not a usable time. The
    serving app writes `datetime.isoformat()`; the range is every event time's."""
    try:
        return parse_timestamp(value)
    except TimestampOutOfRange as exc:
        return "out_of_range", str(exc)
    except ValueError as exc:
        return "bad_timestamp", str(exc)
