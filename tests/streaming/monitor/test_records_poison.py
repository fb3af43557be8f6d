"""Nothing a producer sends crashes the monitor's decoding: any bytes and any JSON in any field
of a prediction or label record end as a record or as a dead letter with its reason, and what
is kept converts to the monitor's arrays and label-index lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from featurestore.timestamps import MAX_US
from streaming.monitor.labels import index_appends, pending_labels
from streaming.monitor.records import decode_labels, decode_predictions, join_key
from tests.streaming.ingest.poison import EDGE_INTS, FakeMessage, json_values, times

REASONS = {
    "malformed_json",
    "oversized",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "bad_timestamp",
}
NAMES = ("a", "b")
GOOD_PREDICTION: dict[str, Any] = {
    "request_id": "r1",
    "at": datetime(2026, 5, 1, tzinfo=UTC).isoformat(),
    "model": "fraud",
    "version": 2,
    "alias": "production",
    "role": "served",
    "entities": {"user_id": "u1", "card": 7},
    "features": {"a": 1.0, "b": None},
    "score": 0.25,
}
GOOD_LABEL: dict[str, Any] = {
    "request_id": "r1",
    "entities": {"user_id": "u1"},
    "label": 1,
    "at": datetime(2026, 5, 1, 0, 5, tzinfo=UTC).isoformat(),
}
numbers = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EDGE_INTS)
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["a\tb", "a\nb", "a\u2028b", "a\\nb", "a\\", "\x85"]
)


def names(model: str, version: int) -> tuple[str, ...] | None:
    return NAMES if model == "fraud" else None


@st.composite
def changed(draw: st.DrawFn, good: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """`good` with some fields replaced by drawn values (any JSON, or one of their kind), some
    removed."""
    record = dict(good)
    for name, kind in fields.items():
        choice = draw(st.integers(0, 5))
        if choice == 0:
            record.pop(name, None)
        elif choice == 1:
            record[name] = draw(json_values)
        elif choice == 2:
            record[name] = draw(kind)
    return record


prediction_fields = {
    "request_id": texts,
    "at": times,
    "model": st.sampled_from(["fraud", "other"]),
    "version": st.sampled_from(EDGE_INTS) | st.integers(1, 3),
    "role": st.sampled_from(["served", "shadow", "canary"]),
    "entities": st.dictionaries(texts, texts | numbers | json_values, max_size=3),
    "features": st.dictionaries(st.sampled_from(NAMES), numbers | json_values, max_size=2),
    "score": numbers,
    "request_features": st.lists(texts, max_size=2),
}
label_fields = {
    "request_id": texts,
    "entities": st.dictionaries(texts, texts | numbers | json_values, max_size=3),
    "label": numbers,
    "at": times,
}


def messages_of(payloads: list[bytes | None]) -> list[Any]:
    return [FakeMessage(p, (0, i)) for i, p in enumerate(payloads)]


def assert_lines_parse(text: str, fields: int) -> None:
    """The label index's lines split as labels.join_labels splits them."""
    for line in text.splitlines():
        assert len(line.split("\t")) == fields, line


@settings(max_examples=150, deadline=None)
@given(st.lists(changed(GOOD_PREDICTION, prediction_fields), min_size=1, max_size=8))
@example([{**GOOD_PREDICTION, "at": "9999-12-31T23:59:59+00:00"}])
@example([{**GOOD_PREDICTION, "at": 10**17}])
@example([{**GOOD_PREDICTION, "version": 2**63}])
@example([{**GOOD_PREDICTION, "score": 2**53 + 1}])
@example([{**GOOD_PREDICTION, "features": {"a": 2**64 - 1}}])
@example([{**GOOD_PREDICTION, "entities": {"u": [[[]]]}}])
@example([{**GOOD_PREDICTION, "request_id": "r\n1", "entities": {"u\t": "x\u2028y"}}])
def test_any_prediction_record_is_kept_or_dead_lettered(records: list[dict[str, Any]]) -> None:
    messages = messages_of([json.dumps(r).encode() for r in records])
    decoded = decode_predictions(messages, names, keep_requests=True)
    left_out = decoded.unmonitored + decoded.request_fed
    assert len(decoded) + len(decoded.rejected) + left_out == len(records)
    assert {r.reason for r in decoded.rejected} <= REASONS
    assert ((decoded.ts >= 0) & (decoded.ts < MAX_US)).all()
    for rows in decoded.rows:  # a series whose every record was refused has none
        assert np.array(rows, dtype=np.float64).reshape(-1, len(NAMES) + 1).shape[0] == len(rows)
    assert len(decoded.requests) == len(decoded)
    lines = index_appends(decoded, range(len(decoded)), horizon_us=3_600_000_000)
    for (_bucket, field), text in lines.items():
        assert_lines_parse(text, 6 if field.startswith("r:") else 2)
    for rejected in decoded.rejected:
        assert len(rejected.detail) < 400, rejected.detail


def test_out_of_range_records_say_so() -> None:
    records = [
        {**GOOD_PREDICTION, "at": "9999-12-31T23:59:59+00:00"},
        {**GOOD_PREDICTION, "at": 10**17},
        {**GOOD_PREDICTION, "version": 2**63},
        {**GOOD_PREDICTION, "score": 2**53 + 1},
        {**GOOD_PREDICTION, "features": {"a": 2**64 - 1}},
        {**GOOD_PREDICTION, "entities": {"u": [1]}},
        {**GOOD_PREDICTION, "at": "1969-12-31T23:59:59Z"},
    ]
    decoded = decode_predictions(
        messages_of([json.dumps(r).encode() for r in records]), names, keep_requests=True
    )
    assert [r.reason for r in decoded.rejected] == ["out_of_range"] * 5 + [
        "wrong_type",
        "out_of_range",
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(changed(GOOD_LABEL, label_fields), min_size=1, max_size=8))
@example([{**GOOD_LABEL, "at": 10**17}])
@example([{**GOOD_LABEL, "label": 2**64 - 1}])
@example([{**GOOD_LABEL, "label": True}])
@example([{**GOOD_LABEL, "entities": {"u": {"deep": [1]}}}])
def test_any_label_record_is_kept_or_dead_lettered(records: list[dict[str, Any]]) -> None:
    labels = decode_labels(messages_of([json.dumps(r).encode() for r in records]))
    assert len(labels.records) + len(labels.rejected) == len(records)
    assert {r.reason for r in labels.rejected} <= REASONS
    assert ((labels.ts >= 0) & (labels.ts < MAX_US)).all()
    np.array([label for _, _, label in labels.records], dtype=np.float64)
    pending_labels(labels, range(len(labels.records)))
    for request, entity, _label in labels.records:
        assert not any(c in request + entity for c in "\t\n\r\u2028\u2029\x85")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.none() | st.binary(max_size=40), min_size=1, max_size=8))
@example([b"", b"{", b"[1]", b"null", b"NaN", b"\xed\xa0\x80", b"[" * 1100])
def test_arbitrary_bytes_never_raise_out_of_the_monitor_decoders(
    payloads: list[bytes | None],
) -> None:
    predictions = decode_predictions(messages_of(payloads), names, keep_requests=True)
    labels = decode_labels(messages_of(payloads))
    assert len(predictions.rejected) + predictions.unmonitored == len(payloads)
    assert len(labels.rejected) + len(labels.records) == len(payloads)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"u": "a\tb"}, {"u": "a\\x09b"}),
        ({"u": "a\nb"}, {"u": "a\\nb"}),
        ({"u": "a|b"}, {"u|a": "b"}),
    ],
)
def test_escaped_entity_keys_stay_distinct(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert join_key(one) != join_key(other)
