"""The prediction-log record: what the serving app writes is what the drift monitor reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from featurestore.prediction_records import (
    SERVED_ROLE,
    SHADOW_ROLE,
    LogBatch,
    LogGroup,
    MalformedRecord,
    feature_row,
    read_record,
)
from featurestore.timestamps import parse_iso
from streaming.monitor.records import decode_predictions

AT = datetime(2026, 5, 1, tzinfo=UTC)


def batch(
    rows: int,
    role: str = SERVED_ROLE,
    key_columns: tuple[str, ...] = ("user_id", "card"),
    sent: frozenset[str] = frozenset(),
) -> LogBatch:
    return LogBatch(
        request_id="r1",
        at=AT,
        model="fraud",
        role=role,
        entities={"user_id": [f"u{i}" for i in range(rows)], "card": list(range(rows))},
        key_columns=key_columns,
        groups=(
            LogGroup(
                version=2,
                alias="canary",
                names=("a", "b"),
                rows=np.arange(rows, dtype=np.intp),
                matrix=np.array([[1.0, np.nan]] * rows),
                scores=np.full(rows, 0.25),
            ),
        ),
        request_features=sent,
    )


def test_records_are_one_json_object_per_row_keyed_by_entity() -> None:
    records = list(batch(2).records())
    assert [key for key, _ in records] == [b"u0|0", b"u1|1"]
    # Byte for byte: the monitor, the demo and stored topics read this format.
    assert records[1][1] == (
        b'{"request_id":"r1","at":"2026-05-01T00:00:00+00:00","model":"fraud","version":2,'
        b'"alias":"canary","role":"served","entities":{"user_id":"u1","card":1},'
        b'"features":{"a":1.0,"b":null},"score":0.25}'
    )


def test_the_message_key_uses_the_key_columns_the_request_gives() -> None:
    assert [k for k, _ in batch(1, key_columns=("card", "merchant")).records()] == [b"0"]
    assert [k for k, _ in batch(1, key_columns=("merchant",)).records()] == [b""]


class _Message:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def test_the_monitor_reads_what_the_server_writes() -> None:
    written = [value for _, value in batch(3).records()]
    written += [value for _, value in batch(1, role=SHADOW_ROLE).records()]
    messages: list[Any] = [_Message(value, i) for i, value in enumerate(written)]
    decoded = decode_predictions(messages, lambda model, version: ("b", "a"), keep_requests=True)
    assert not decoded.rejected
    assert decoded.keys == [("fraud", 2, SERVED_ROLE), ("fraud", 2, SHADOW_ROLE)]
    assert decoded.rows == [[[None, 1.0, 0.25]] * 3, [[None, 1.0, 0.25]]]
    assert decoded.ts.tolist() == [parse_iso(AT.isoformat())] * 4
    assert [request for request, _, _ in decoded.requests] == ["r1"] * 4


def test_request_features_are_marked_and_kept_out_of_the_monitor_unless_asked() -> None:
    # "b" was sent by the caller; "z" too, but this model version has no such feature.
    written = [value for _, value in batch(2, sent=frozenset({"b", "z"})).records()]
    written += [value for _, value in batch(1).records()]
    assert orjson.loads(written[0])["request_features"] == ["b"]
    assert "request_features" not in orjson.loads(written[2])  # absent: none sent
    messages: list[Any] = [_Message(value, i) for i, value in enumerate(written)]
    names = lambda model, version: ("a", "b")  # noqa: E731
    default = decode_predictions(messages, names, keep_requests=True)
    assert (len(default), default.request_fed, default.rejected) == (1, 2, [])
    assert len(default.requests) == 1  # nor in the label join, so not in performance either
    included = decode_predictions(messages, names, True, include_request_features=True)
    assert (len(included), included.request_fed) == (3, 0)
    wrong = orjson.loads(written[2]) | {"request_features": "b"}
    bad = decode_predictions([_Message(orjson.dumps(wrong), 0)], names, keep_requests=False)
    assert [(r.reason, r.detail) for r in bad.rejected] == [
        ("wrong_type", "`request_features` must be a list of feature names")
    ]


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"score": None}, "wrong_type", "score None is not a number"),
        ({"version": "2"}, "wrong_type", "must be a string and an integer"),
        ({"version": True}, "wrong_type", "must be a string and an integer"),
        ({"role": "canary"}, "wrong_type", "role 'canary' is not one of served, shadow"),
        ({"features": [1.0]}, "wrong_type", "`features` must be an object"),
    ],
)
def test_a_wrong_record_says_why(change: dict[str, Any], reason: str, detail: str) -> None:
    record = {**orjson.loads(next(batch(1).records())[1]), **change}
    with pytest.raises(MalformedRecord) as caught:
        read_record(record)
    assert caught.value.reason == reason and detail in str(caught.value)


@pytest.mark.parametrize("field", ["model", "version", "role", "features", "score", "at"])
def test_a_record_without_a_field_it_needs_says_which(field: str) -> None:
    record = orjson.loads(next(batch(1).records())[1])
    del record[field]
    with pytest.raises(MalformedRecord, match=f"field '{field}' is missing") as caught:
        read_record(record)
    assert caught.value.reason == "missing_field"


def test_a_feature_value_is_a_number_or_null() -> None:
    assert feature_row({"a": 1, "b": 2.5, "c": None}, ["c", "b", "a", "d"]) == [None, 2.5, 1, None]
    for bad in ("1.5", True, [1.0]):
        with pytest.raises(MalformedRecord, match="feature 'a' is not a number or null"):
            feature_row({"a": bad}, ["a"])
