"""Prediction-log and label messages -> columns the monitor works on, and a reason for each
message that is not a valid record (dead-lettered, as the ingest worker does). What a
prediction-log record holds is featurestore/prediction_records.py's, which the serving app
writes with.

The one per-message Python loop of the monitor: JSON parsing and a few type checks. A
record's features are read in its model version's profile order; a null feature is missing
(NaN). Records of a model version with no reference profile are counted and skipped: there
is nothing to compare them with (`fstore train` profiles every model it registers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import orjson
from confluent_kafka import Message

from featurestore.keys import entity_key
from featurestore.prediction_records import (
    MalformedRecord,
    PredictionRecord,
    feature_row,
    read_record,
)
from featurestore.tiles import I64
from featurestore.timestamps import parse_iso, parse_timestamp
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

    def __len__(self) -> int:
        return len(self.ts)


def join_key(entities: dict[str, Any]) -> str:
    """One string per entity row, the same for a prediction and its label: its `key=value` pairs
    by key, as an entity key (featurestore.keys), so a `|` in a value cannot make two entities
    meet. Rows without `|` or `\\` keep the key they had before that escaping (stored indexes
    still match).

    >>> join_key({"user_id": "u1", "card": 7})
    'card=7|user_id=u1'
    >>> join_key({"user_id": "u1|card=7"}) != join_key({"user_id": "u1", "card": 7})
    True
    """
    return entity_key([f"{key}={entities[key]}" for key in sorted(entities)])


def decode_predictions(
    messages: list[Message], names: Names, keep_requests: bool, max_bytes: int = MAX_MESSAGE_BYTES
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
    unmonitored = 0
    for message in messages:
        value = _json(message, max_bytes, rejected)
        if value is None:
            continue
        try:
            model, version, role, features, score, at = read_record(value)
        except MalformedRecord as exc:
            rejected.append(Rejected(message, exc.reason, str(exc)))
            continue
        micros = times.get(at) if type(at) is str else None
        if micros is None:
            try:
                micros = _micros(at)
            except ValueError as exc:
                rejected.append(Rejected(message, "bad_timestamp", str(exc)))
                continue
            times[at] = micros
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
        row.append(score)
        series.append(index)
        position.append(len(rows[index]))
        rows[index].append(row)
        ts.append(micros)
        partitions.append(message.partition() or 0)
        offsets.append(message.offset() or 0)
        if keep_requests:
            record = cast(PredictionRecord, value)  # the label join takes what it finds
            entities = record.get("entities")
            requests.append(
                (
                    str(record.get("request_id", "")),
                    join_key(entities) if isinstance(entities, dict) else "",
                    float(score),
                )
            )
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
        if not isinstance(label, int | float) or isinstance(label, bool) or label != label:
            rejected.append(Rejected(message, "wrong_type", f"label {label!r} is not a number"))
            continue
        try:
            micros = _micros(record.get("at"))
        except ValueError as exc:
            rejected.append(Rejected(message, "bad_timestamp", str(exc)))
            continue
        records.append(
            (
                request if isinstance(request, str) else "",
                join_key(entities) if isinstance(entities, dict) and entities else "",
                float(label),
            )
        )
        ts.append(micros)
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


def _micros(value: object) -> int:
    if isinstance(value, str):
        # The serving app writes `datetime.isoformat()`; no "before 1970" check here.
        return parse_iso(value)
    return parse_timestamp(value)
