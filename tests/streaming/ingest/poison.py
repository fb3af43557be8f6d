"""Poison for the ingest path: a source with every field type, hypothesis strategies for any
JSON a producer may send, and an independent model of which reason each event deserves.

The model (`expected_reason`) is written from docs/semantics.md, not from the decoder: plain
isinstance tests, aware-datetime comparisons for the time range, and orjson's number parsing
(integers beyond 64 bits arrive as floats) spelled out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource

SCHEMA = {
    "user_id": "string",
    "n": "int64",
    "amount": "float64",
    "flag": "bool",
    "seen": "timestamp",  # a timestamp column that is not the event time
}
FIELDS = [*SCHEMA, "ts"]
FIRST = datetime(1970, 1, 1, tzinfo=UTC)
END = datetime(2200, 1, 1, tzinfo=UTC)  # excluded
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_US = (NOW - FIRST) // timedelta(microseconds=1)
MAX_FUTURE = timedelta(minutes=5)
EDGE_INTS = [
    0,
    2**53,
    2**53 + 1,
    -(2**53),
    -(2**53) - 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64 - 1,
    2**64,
    10**30,
    -(10**30),
]


def poison_view(topic: str, name: str = "poison") -> FeatureView:
    source = KafkaSource(name="poison_src", topic=topic, timestamp_field="ts", schema=SCHEMA)
    return FeatureView(
        name=name,
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=source,
        tile="1m",
        allowed_lateness="1h",
        aggregations=[
            Aggregation(function="count", windows=["10m", "1h"]),
            Aggregation(column="n", function="sum", windows=["1h"]),
            Aggregation(column="amount", function="sum", windows=["1h"]),
            Aggregation(column="amount", function="stddev", windows=["1h"]),
            Aggregation(column="amount", function="last", windows=["1h"]),
            Aggregation(column="flag", function="max", windows=["1h"]),
            Aggregation(column="seen", function="approx_count_distinct", windows=["1h"]),
        ],
    )


@dataclass
class FakeMessage:
    """What decode reads of a confluent_kafka.Message."""

    payload: bytes | None
    where: tuple[int, int]  # partition, offset

    def value(self) -> bytes | None:
        return self.payload

    def partition(self) -> int:
        return self.where[0]

    def offset(self) -> int:
        return self.where[1]

    def key(self) -> bytes | None:
        return None

    def topic(self) -> str:
        return "poison"

    def error(self) -> None:
        return None


# -- strategies ---------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.sampled_from(EDGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=23, minutes=59))]
)
iso_times = st.one_of(
    st.datetimes(timezones=offsets).map(datetime.isoformat),  # years 1 to 9999
    st.datetimes().map(datetime.isoformat),  # naive: refused
    st.datetimes(  # hypothesis takes naive bounds and applies `timezones` to each draw
        min_value=datetime(2026, 2, 28),  # noqa: DTZ001
        max_value=datetime(2026, 3, 2),  # noqa: DTZ001
        timezones=offsets,
    ).map(datetime.isoformat),  # around NOW: some ahead by more than MAX_FUTURE
)
epoch_ms = st.one_of(
    st.integers(-(10**16), 10**17),
    st.integers(NOW_US // 1000 - 86_400_000, NOW_US // 1000 + 600_000),
    st.sampled_from([0, -1, 7_258_118_400_000 - 1, 7_258_118_400_000, 9_200_000_000_000_000]),
)
times = st.one_of(iso_times, epoch_ms, st.text(max_size=12))
typed: dict[str, st.SearchStrategy[Any]] = {
    "user_id": st.sampled_from(["u1", "u2", "a|b", "", "\x00", "é" * 3]),
    "n": st.integers(-(2**64), 2**64) | st.sampled_from(EDGE_INTS),
    "amount": st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**54), 2**54)
    | st.sampled_from(EDGE_INTS),
    "flag": st.booleans(),
    "seen": times,
    "ts": times,
}


recent_ms = st.integers(NOW_US // 1000 - 7_200_000, NOW_US // 1000 + 1_800_000)
recent = recent_ms | recent_ms.map(
    lambda ms: (FIRST + timedelta(milliseconds=ms)).astimezone(timezone(timedelta(hours=-5)))
).map(datetime.isoformat)  # 2 h before NOW to 30 min after: some beyond MAX_FUTURE
plausible: dict[str, st.SearchStrategy[Any]] = {
    "user_id": st.sampled_from(["u1", "u2", "u3"]),
    "n": st.integers(-1000, 1000),
    "amount": st.floats(-1e6, 1e6) | st.integers(-1000, 1000),
    "flag": st.booleans(),
    "seen": recent,
    "ts": recent,
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """An event whose fields are mostly ordinary values of their type, else edge values of it,
    any JSON, or absent: most events are applied, and every reason comes up."""
    event: dict[str, Any] = {}
    for name in FIELDS:
        choice = draw(st.integers(0, 19))
        if choice == 0:
            continue  # absent
        if choice == 1:
            event[name] = draw(json_values)
        elif choice < 6:
            event[name] = draw(typed[name])
        else:
            event[name] = draw(plausible[name])
    return event


def as_bytes(event: dict[str, Any]) -> bytes:
    """JSON as any producer may write it: stdlib json writes integers of any size."""
    return json.dumps(event).encode()


# -- the reference model ------------------------------------------------------------------


def as_orjson_reads(value: Any) -> Any:
    """orjson keeps integers within [-2**63, 2**64) and reads larger ones as floats."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, list):
            return [as_orjson_reads(v) for v in value]
        if isinstance(value, dict):
            return {k: as_orjson_reads(v) for k, v in value.items()}
        return value
    return value if -(2**63) <= value < 2**64 else float(value)


def time_verdict(value: Any) -> tuple[str | None, datetime | None]:
    """(reason or None, the time) of a timestamp field's value."""
    if isinstance(value, bool):
        return "wrong_type", None
    if isinstance(value, int):
        when = FIRST + timedelta(milliseconds=value) if abs(value) < 10**14 else None
        if when is None or not FIRST <= when < END:
            return "out_of_range", None
        return None, when
    if not isinstance(value, str):
        return "wrong_type", None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return "bad_timestamp", None
    if when.tzinfo is None:
        return "bad_timestamp", None
    if not FIRST <= when < END:
        return "out_of_range", None
    return None, when


def expected_reason(event: dict[str, Any], now: datetime = NOW) -> str | None:
    """The dead-letter reason docs/semantics.md gives `event`, or None: applied."""
    event = as_orjson_reads(event)
    for name, kind in SCHEMA.items():
        value = event.get(name)
        if value is None:
            return "missing_field"
        if kind == "string" and not isinstance(value, str):
            return "wrong_type"
        if kind == "bool" and not isinstance(value, bool):
            return "wrong_type"
        if kind in ("int64", "float64"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "wrong_type"
            if kind == "int64" and isinstance(value, float):
                return "wrong_type"
            limit = 2**53 if kind == "float64" else 2**63
            if isinstance(value, int) and not -limit <= value <= limit - (kind == "int64"):
                return "out_of_range"
        if kind == "timestamp":
            reason, _ = time_verdict(value)
            if reason is not None:
                return reason
    reason, when = time_verdict(event.get("ts"))
    if reason is not None:
        return "bad_timestamp" if reason == "wrong_type" else reason
    assert when is not None
    return "future" if when > now + MAX_FUTURE else None
