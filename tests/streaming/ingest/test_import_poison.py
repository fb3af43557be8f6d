"""`fstore import` takes exactly the events the stream takes: the same rules for every value
(out_of_range, future included), reported per row, and never an exception for a bad file."""

from __future__ import annotations

import csv
import itertools
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from featurestore.config import OfflineSettings, Settings
from featurestore.offline.log import OfflineStore
from featurestore.registry import RegisteredView
from featurestore.timestamps import to_us
from streaming.ingest.decode import decode
from streaming.ingest.importer import import_events
from tests.streaming.ingest.poison import (
    FIELDS,
    NOW,
    NOW_US,
    SCHEMA,
    FakeMessage,
    as_bytes,
    events,
    poison_view,
)

pytestmark = pytest.mark.integration

NOW_S = NOW_US // 1_000_000
_views = itertools.count(1)


def registered(name: str) -> RegisteredView:
    return RegisteredView(poison_view("unused", name), 1, "test", datetime.now(UTC))


def good_columns(rows: int) -> dict[str, pa.Array]:
    return {
        "user_id": pa.array(["u1"] * rows),
        "n": pa.array([1] * rows, pa.int64()),
        "amount": pa.array([1.5] * rows),
        "flag": pa.array([True] * rows),
        "seen": pa.array(["2026-01-01T00:00:00Z"] * rows),
        "ts": pa.array([NOW_S - 60] * rows, pa.timestamp("s", tz="UTC")),
    }


CASES: list[tuple[str, pa.Array, list[str | None]]] = [
    ("n", pa.array([1, 2**63], pa.uint64()), [None, "out_of_range"]),
    ("n", pa.array([1.0, 2.0]), ["wrong_type", "wrong_type"]),
    ("n", pa.array([[1], None], pa.list_(pa.int64())), ["wrong_type", "missing_field"]),
    ("amount", pa.array([1.0, float("nan"), float("inf")]), [None, "out_of_range", "out_of_range"]),
    ("amount", pa.array([2**53, 2**53 + 1], pa.int64()), [None, "out_of_range"]),
    ("amount", pa.array(["5", "x"]), ["wrong_type", "wrong_type"]),
    ("flag", pa.array([1, 0], pa.int8()), ["wrong_type", "wrong_type"]),
    ("user_id", pa.array([date(2026, 1, 1)], pa.date32()), ["wrong_type"]),
    ("ts", pa.array([NOW_S, 10**14], pa.timestamp("s", tz="UTC")), [None, "out_of_range"]),
    (
        "ts",
        pa.array([NOW_US * 1000 - 60 * 10**9 + 1, -1], pa.timestamp("ns", tz="UTC")),
        [None, "out_of_range"],
    ),
    ("ts", pa.array([NOW_S], pa.timestamp("s")), ["bad_timestamp"]),
    ("ts", pa.array([NOW_S + 3600, NOW_S + 60], pa.timestamp("s", tz="UTC")), ["future", None]),
    ("ts", pa.array([date(2026, 1, 1)], pa.date32()), ["bad_timestamp"]),
    ("ts", pa.array([NOW_US // 1000, 10**17, -1]), [None, "out_of_range", "out_of_range"]),
    ("ts", pa.array([1.5e12]), ["bad_timestamp"]),
    ("seen", pa.array([NOW_S, 10**14], pa.timestamp("s", tz="UTC")), [None, "out_of_range"]),
    ("seen", pa.array([NOW_S], pa.timestamp("s")), ["bad_timestamp"]),
    ("seen", pa.array([1772366400000, -5]), [None, "out_of_range"]),
]


@pytest.fixture
def store_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"offline": OfflineSettings(root=tmp_path / "log")})


@pytest.mark.parametrize(("column", "array", "reasons"), CASES)
def test_a_parquet_value_the_stream_would_refuse_is_reported_with_the_same_reason(
    store_settings: Settings, tmp_path: Path, column: str, array: pa.Array, reasons: list[Any]
) -> None:
    table = pa.table({**good_columns(len(array)), column: array})
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path)
    report = import_events(store_settings, registered("p"), path, now_us=NOW_US)
    got: list[str | None] = [None] * len(array)
    for row, text in report.rejected:
        got[row] = text.split(":")[0]
    assert got == reasons, report.rejected
    assert report.imported == reasons.count(None)


def test_timestamps_from_arrow_keep_their_instant(store_settings: Settings, tmp_path: Path) -> None:
    nanos = NOW_US * 1000 - 60 * 10**9 + 999  # sub-microsecond part: floored, never an error
    table = pa.table(
        {
            **good_columns(1),
            "seen": pa.array([NOW_S], pa.timestamp("s", tz="UTC")),
            "ts": pa.array([nanos], pa.timestamp("ns", tz="UTC")),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    report = import_events(store_settings, registered("t"), tmp_path / "t.parquet", now_us=NOW_US)
    assert report.imported == 1, report.rejected
    log = OfflineStore(store_settings.offline).read_events("t", 1)
    assert log["seen"].to_pylist() == [NOW.isoformat()]
    [when] = log["event_timestamp"].to_pylist()
    assert to_us(when) == nanos // 1000


def csv_cell(kind: str, value: Any) -> str:
    """How an exporter would write a JSON value into a CSV cell of a column of `kind`."""
    if value is None:
        return ""
    if kind in ("string", "timestamp") and isinstance(value, str):
        return value
    if kind == "timestamp" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value)


def exportable(event: dict[str, Any]) -> dict[str, Any]:
    """What a CSV can say as the stream does: a string column's cells are text, non-empty; a
    timestamp cell of digits only is epoch ms (the string "123" and the number 123 meet)."""
    out = {}
    for name, value in event.items():
        kind = SCHEMA.get(name, "timestamp")
        if kind == "string" and (not isinstance(value, str) or value == ""):
            continue
        if kind == "timestamp" and isinstance(value, str) and value.isascii() and value.isdigit():
            continue
        out[name] = value
    return out


@hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(events().map(exportable), min_size=1, max_size=10))
def test_a_csv_import_accepts_exactly_what_the_stream_accepts(
    store_settings: Settings, tmp_path: Path, batch: list[dict[str, Any]]
) -> None:
    name = f"csv{next(_views)}"
    view = registered(name).view
    decoded = decode(
        [FakeMessage(as_bytes(e), (0, i)) for i, e in enumerate(batch)],  # type: ignore[misc]
        view.source,
        now_us=NOW_US,
    )
    refused = {r.message.offset() for r in decoded.rejected}
    path = tmp_path / f"{name}.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(FIELDS)
        for event in batch:
            writer.writerow([csv_cell(SCHEMA.get(f, "timestamp"), event.get(f)) for f in FIELDS])
    report = import_events(store_settings, registered(name), path, now_us=NOW_US)
    assert {row for row, _ in report.rejected} == refused, report.rejected
    assert report.imported == len(decoded)
    if report.imported:
        log = OfflineStore(store_settings.offline).read_events(name, 1)
        columns = [c for c in SCHEMA if c != "ts"]
        imported = sorted(zip(*(log[c].to_pylist() for c in columns), strict=True), key=repr)
        values = {**decoded.events.columns}
        values["amount"] = [float(v) for v in values["amount"]]  # the log's column is float64
        streamed = sorted(zip(*(values[c] for c in columns), strict=True), key=repr)
        assert imported == streamed
