"""The value rules (featurestore.events) and the event-time range (featurestore.timestamps):
whatever JSON value comes, the rule answers without raising, and a value it accepts converts
exactly where the writer puts it (numpy float64 for tiles, Arrow for the log)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.config import RegistrySettings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource, ValueType
from featurestore.events import check_value
from featurestore.registry import Registry, Status
from featurestore.repo import RepoContents
from featurestore.timestamps import MAX_US, TimestampOutOfRange, parse_timestamp
from tests.streaming.ingest.poison import EDGE_INTS, json_values, times

ARROW = {
    ValueType.STRING: pa.string(),
    ValueType.INT64: pa.int64(),
    ValueType.FLOAT64: pa.float64(),
    ValueType.BOOL: pa.bool_(),
}


@given(st.sampled_from(list(ValueType)), json_values | st.sampled_from(EDGE_INTS) | times)
def test_a_rule_answers_for_any_value_and_what_it_accepts_converts(
    kind: ValueType, value: Any
) -> None:
    problem = check_value(kind, value)
    if problem is not None:
        assert problem[0] in {"wrong_type", "out_of_range", "bad_timestamp"}
        return
    if kind in ARROW:
        assert pa.array([value], ARROW[kind]).to_pylist() == [value]
    if kind in (ValueType.INT64, ValueType.FLOAT64, ValueType.BOOL):
        np.asarray([value], dtype=np.float64)
    if kind is ValueType.FLOAT64:
        assert float(value) == value  # exactly: no integer rounds on its way in


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (0, 0),
        ("1970-01-01T00:00:00Z", 0),
        (7_258_118_399_999, MAX_US - 1000),
        ("2199-12-31T23:59:59.999999Z", MAX_US - 1),
        ("2200-01-01T01:00:00+02:00", MAX_US - 3_600_000_000),
    ],
)
def test_the_ends_of_the_event_time_range_are_accepted(value: object, micros: int) -> None:
    assert parse_timestamp(value) == micros


@pytest.mark.parametrize(
    "value",
    [
        -1,
        7_258_118_400_000,
        9_223_372_036_854_775,
        2**64,
        "1969-12-31T23:59:59.999999Z",
        "2200-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
    ],
)
def test_times_outside_the_range_are_out_of_range(value: object) -> None:
    with pytest.raises(TimestampOutOfRange):
        parse_timestamp(value)


@pytest.mark.parametrize("value", [True, 1.5e12, None, [1], {"ms": 1}, "soon", "2026-03-01"])
def test_other_values_are_bad_timestamps_not_out_of_range(value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_timestamp(value)
    assert not isinstance(caught.value, TimestampOutOfRange)


@given(times | json_values)
def test_parse_timestamp_only_ever_raises_value_error(value: Any) -> None:
    try:
        micros = parse_timestamp(value)
    except ValueError as exc:
        assert len(str(exc)) < 200
    else:
        assert 0 <= micros < MAX_US


def view(max_future: str | None = None) -> FeatureView:
    source = KafkaSource(
        name="txns",
        topic="transactions",
        timestamp_field="ts",
        schema={"user_id": "string", "amount": "float64"},
        max_future=max_future,
    )
    return FeatureView(
        name="user_txn",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=source,
        tile="1m",
        aggregations=[Aggregation(column="amount", function="sum", windows=["10m", "1h"])],
    )


def test_max_future_leaves_the_fingerprint_of_existing_views_alone(tmp_path: Path) -> None:
    # The fingerprint this view had before `max_future` existed (computed on the parent commit).
    assert view().fingerprint() == "4fed61dfd3ba8f01"
    assert view("1h").fingerprint() == view().fingerprint()
    assert view().source.max_future_us == 5 * 60 * 1_000_000
    assert view("2d").source.max_future_us == 2 * 86_400 * 1_000_000
    with pytest.raises(ValueError, match="is not a duration"):
        view("soon")

    registry = Registry(RegistrySettings(path=tmp_path))
    first = registry.apply(RepoContents(views={"user_txn": view()}))
    assert first.status("user_txn") is Status.CREATED
    assert registry.apply(RepoContents(views={"user_txn": view()})).status("user_txn") is (
        Status.UNCHANGED
    )
    changed = registry.apply(RepoContents(views={"user_txn": view("1h")}))
    assert changed.status("user_txn") is Status.METADATA
    assert changed.views[0].version == 1
    assert registry.get_view("user_txn").view.source.max_future == "1h"


def test_aware_times_at_the_far_offsets_compare_by_their_instant() -> None:
    far = datetime(2199, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=2)))
    with pytest.raises(TimestampOutOfRange):
        parse_timestamp(far.isoformat())  # 2200-01-01T01:00Z
    assert parse_timestamp(datetime(2026, 1, 1, tzinfo=UTC).isoformat()) > 0
