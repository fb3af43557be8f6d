"""The prediction-log record: one scored row, as the serving app writes it to Kafka and the drift
monitor reads it back. Its shape lives here alone; `serving` encodes with it and `streaming`
checks with it, and neither imports the other.

A record is one JSON object: {"request_id", "at" (UTC, ISO 8601), "model", "version", "alias",
"role" ("served" | "shadow"), "entities": {join key: value}, "features": {name: number | null},
"score"}, and "request_features": [name, ...] when the caller sent some of the features itself
(`request_features` of a predict request): those values, and the score they steer, are the
caller's, so the monitor leaves such records out of its statistics unless told otherwise
(`request_fed`). Its Kafka message key is the entity key (featurestore.keys) of the model's
routing join keys, so the records of one entity stay in order on one partition.

>>> from datetime import UTC, datetime
>>> import numpy as np
>>> at = datetime(2026, 5, 1, tzinfo=UTC)
>>> batch = LogBatch(
...     "r1", at, "fraud", SERVED_ROLE, {"user_id": ["u1"]}, ("user_id",),
...     (LogGroup(2, "production", ("amount",), np.arange(1), np.array([[np.nan]]), np.ones(1)),),
... )
>>> [(key, orjson.loads(value)["features"]) for key, value in batch.records()]
[(b'u1', {'amount': None})]
>>> read_record(orjson.loads(next(batch.records())[1]))
('fraud', 2, 'served', {'amount': None}, 1.0, '2026-05-01T00:00:00+00:00')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NotRequired, TypedDict

import numpy as np
import numpy.typing as npt
import orjson

from featurestore.definitions import ValueType
from featurestore.events import INT64_MAX, INT64_MIN, check_value
from featurestore.keys import entity_key
from featurestore.timestamps import show

__all__ = [
    "ROLES",
    "SERVED_ROLE",
    "SHADOW_ROLE",
    "LogBatch",
    "LogGroup",
    "MalformedRecord",
    "PredictionRecord",
    "RecordHead",
    "feature_row",
    "read_record",
    "request_fed",
]

SERVED_ROLE = "served"  # a row whose score was the answer
SHADOW_ROLE = "shadow"  # a row scored again by the shadow alias's version, off the response path
ROLES = (SERVED_ROLE, SHADOW_ROLE)


class PredictionRecord(TypedDict):
    """One record, as decoded JSON; mypy holds both sides to these field names."""

    request_id: str
    at: str  # datetime.isoformat() of the request's as-of time (UTC)
    model: str
    version: int
    alias: str
    role: str  # one of ROLES
    entities: dict[str, Any]  # join key -> this row's value (a string or an integer)
    features: dict[str, float | None]  # model feature name -> value scored; null: missing (NaN)
    score: float
    request_features: NotRequired[list[str]]  # names whose values the caller sent; absent: none


@dataclass(frozen=True)
class LogGroup:
    """The rows of a request that one model version scored."""

    version: int
    alias: str
    names: tuple[str, ...]
    rows: npt.NDArray[np.intp]  # positions in the request's entity lists
    matrix: npt.NDArray[np.float64]  # the feature vectors scored, one row per position
    scores: npt.NDArray[np.float64]


@dataclass(frozen=True)
class LogBatch:
    """The records of one request in one role: a record per row of each group."""

    request_id: str
    at: datetime
    model: str
    role: str
    entities: Mapping[str, Sequence[Any]]
    key_columns: tuple[str, ...]  # join keys that make the message key
    groups: tuple[LogGroup, ...]
    request_features: frozenset[str] = frozenset()  # model feature names the caller sent

    @property
    def size(self) -> int:
        return sum(len(group.rows) for group in self.groups)

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """(message key, JSON value) of each row's record. The key is the entity key of the row's
        values of those `key_columns` the request gives (all of them, unless it asked for an
        alias by name).

        >>> from datetime import UTC, datetime
        >>> batch = LogBatch(
        ...     "r1", datetime.now(UTC), "fraud", SERVED_ROLE, {"user": ["a|b"], "card": [7]},
        ...     ("user", "card", "merchant"),
        ...     (LogGroup(1, "production", (), np.arange(1), np.empty((1, 0)), np.zeros(1)),),
        ... )
        >>> [key for key, _ in batch.records()]
        [b'a\\\\|b|7']
        """
        at = self.at.isoformat()
        columns = list(self.entities.items())
        for group in self.groups:
            matrix, scores = group.matrix.tolist(), group.scores.tolist()
            sent = [name for name in group.names if name in self.request_features]
            for i, row in enumerate(group.rows.tolist()):
                entities = {key: values[row] for key, values in columns}
                record: PredictionRecord = {
                    "request_id": self.request_id,
                    "at": at,
                    "model": self.model,
                    "version": group.version,
                    "alias": group.alias,
                    "role": self.role,
                    "entities": entities,
                    # orjson writes NaN (a missing feature) as null.
                    "features": dict(zip(group.names, matrix[i], strict=True)),
                    "score": scores[i],
                }
                if sent:
                    record["request_features"] = sent
                key = entity_key([entities[k] for k in self.key_columns if k in entities])
                yield key.encode(), orjson.dumps(record)


class MalformedRecord(ValueError):
    """A decoded message that is not a prediction-log record: `reason` is "missing_field",
    "wrong_type" or "out_of_range" (a number a float64 or int64 cannot hold), the message says
    what is wrong (a reader dead-letters it with both)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# What a reader works on: model, version, role, features (values unchecked: `feature_row`),
# score, and `at` as written (a reader parses it, and may take any timestamp).
RecordHead = tuple[str, int, str, dict[str, Any], float, Any]


def read_record(record: Mapping[str, Any]) -> RecordHead:
    """The head of a decoded JSON object that is a record; raises `MalformedRecord` when it is
    not one, whatever JSON it is. Cheap: the monitor calls it for every message. The score
    follows the float64 rule of event values (`featurestore.events.check_value`).

    >>> try:
    ...     read_record({"model": "fraud"})
    ... except MalformedRecord as exc:
    ...     print(exc.reason, exc)
    missing_field field 'version' is missing
    """
    try:
        model, version, role = record["model"], record["version"], record["role"]
        features, score, at = record["features"], record["score"], record["at"]
    except KeyError as exc:
        raise MalformedRecord("missing_field", f"field {exc.args[0]!r} is missing") from None
    # type(), not isinstance: a bool is no version, score or feature value.
    if type(model) is not str or type(version) is not int:
        raise MalformedRecord(
            "wrong_type",
            f"model {show(model)} / version {show(version)} must be a string and an integer",
        )
    if not INT64_MIN <= version <= INT64_MAX:
        raise MalformedRecord("out_of_range", f"version {show(version)} is outside int64")
    if role not in ROLES:
        raise MalformedRecord("wrong_type", f"role {show(role)} is not one of {', '.join(ROLES)}")
    if type(features) is not dict:
        raise MalformedRecord(
            "wrong_type", "`features` must be an object of feature name -> number or null"
        )
    if type(score) is not float:
        problem = check_value(ValueType.FLOAT64, score)
        if problem is not None:
            reason, detail = problem
            shown = f"{show(score)} is not a number" if reason == "wrong_type" else detail
            raise MalformedRecord(reason, f"score {shown}")
    return model, version, role, features, score, at


def request_fed(record: Mapping[str, Any]) -> bool:
    """Whether the caller sent some of a record's features (its `request_features`); raises
    `MalformedRecord` when the field is there but not a list of names.

    >>> request_fed({"request_features": ["amount"]}), request_fed({})
    (True, False)
    """
    sent = record.get("request_features")
    if sent is None:
        return False
    if type(sent) is not list or not all(type(name) is str for name in sent):
        raise MalformedRecord("wrong_type", "`request_features` must be a list of feature names")
    return bool(sent)


def feature_row(features: Mapping[str, Any], names: Sequence[str]) -> list[float | None]:
    """The values of `names` in a record's `features`, in that order (an absent name: None);
    raises `MalformedRecord` when one is neither a number nor null.

    >>> feature_row({"a": 1.5, "b": None}, ["b", "a", "c"])
    [None, 1.5, None]
    """
    row = [features.get(name) for name in names]
    if all(v is None or type(v) is float for v in row):
        return row
    for name, value in zip(names, row, strict=True):
        problem = None if value is None else check_value(ValueType.FLOAT64, value)
        if problem is not None:
            reason, detail = problem
            if reason == "wrong_type":
                raise MalformedRecord(reason, f"feature {name!r} is not a number or null")
            raise MalformedRecord(reason, f"feature {name!r} {detail}")
    return row
