"""`fstore import`: historical events that never went through Kafka, into a view's history.

Rows are validated by the stream's rules (`featurestore.events.check_value`: required fields,
types, numbers a column can hold, timestamps with a timezone in the supported range, no event
time more than the source's `max_future` ahead of the wall clock), so a file and a topic accept
exactly the same events. A Parquet value is checked as the JSON value of the same Python type
(a string "5" is no int64); a CSV cell, text, is read as JSON would read it (`5`, `5.0`,
`true`), except in string columns. Each rejected row is reported with its row number and
`reason: detail`, never dropped silently. Accepted rows
are appended to the offline log under the pseudo-partition `IMPORT_PARTITION` with offsets
continuing past earlier imports, so they stay distinct from Kafka's (partition, offset) pairs and
a re-import of the same file is visible as such. With `online=True` they are also merged into the
view's online tiles, in event-time order, exactly once like a batch. Imports into the online state
must come oldest first: the import pseudo-partition has a watermark like any partition, so an
import of history older than a previous one (minus the allowed lateness) counts as late there.
Both paths write the log through `batch_table`, as the stream does; the online one is the view
version's writer, with no Kafka involved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from featurestore.config import Settings
from featurestore.definitions import ValueType
from featurestore.events import VALUE_RULES, EventBatch, Problem, future_detail
from featurestore.offline.log import OfflineStore, batch_table
from featurestore.online import OnlineStore
from featurestore.registry import RegisteredView
from featurestore.timestamps import (
    MAX_US,
    MIN_US,
    TimestampOutOfRange,
    check_range,
    from_us,
    parse_timestamp,
    to_us,
)
from featurestore.writer import ViewWriter
from streaming.errors import StreamingError

__all__ = ["IMPORT_PARTITION", "ImportReport", "import_events"]

IMPORT_PARTITION = -1
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}  # "ns": divided by 1,000 (floor)


@dataclass
class ImportReport:
    """How many rows were read and imported, and why each of the others was rejected."""

    read: int = 0
    imported: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row number, reason)


def import_events(
    settings: Settings,
    target: RegisteredView,
    path: Path,
    online: bool = False,
    now_us: int | None = None,
) -> ImportReport:
    """Validate the rows of `path` (.parquet or .csv) and import the good ones into `target`'s
    offline log, and with `online` into its online state too. `now_us` is the wall clock the
    `future` rule measures from (default: now)."""
    view = target.view
    source = view.source
    table = _read(path, list(source.schema_))
    report = ImportReport(read=table.num_rows)
    missing = [c for c in source.schema_ if c not in table.column_names]
    if missing:
        raise StreamingError(
            f"{path} lacks the columns {missing} that source {source.name!r} requires "
            f"(it has {table.column_names})"
        )

    text = path.suffix == ".csv"
    reasons: dict[int, str] = {}
    columns: dict[str, list[Any]] = {}
    for name, kind in source.schema_.items():
        if name == source.timestamp_field:
            continue
        values = _values(table[name], kind, text)
        rule = VALUE_RULES[kind]
        for row, value in enumerate(values):
            if value is None:
                reasons.setdefault(row, f"missing_field: {name!r} is empty")
                continue
            problem = rule(value)
            if problem is not None:
                reasons.setdefault(row, f"{problem[0]}: {name!r} {problem[1]}")
        if kind is ValueType.TIMESTAMP:  # the text as sent, as the stream keeps it
            values = [None if v is None else str(v) for v in values]
        columns[name] = values
    if now_us is None:
        now_us = to_us(datetime.now(UTC))
    newest = now_us + source.max_future_us
    ts = np.zeros(table.num_rows, dtype=np.int64)
    for row, value in enumerate(_timestamps(table[source.timestamp_field], text)):
        if isinstance(value, tuple):
            reasons.setdefault(row, f"{value[0]}: {value[1]}")
        elif value > newest:
            reasons.setdefault(row, f"future: {future_detail(value, now_us, source)}")
        else:
            ts[row] = value
    good = np.ones(table.num_rows, dtype=bool)
    good[list(reasons)] = False
    report.rejected = sorted(reasons.items())

    keep = np.flatnonzero(good)
    order = keep[np.argsort(ts[keep], kind="stable")]  # event-time order: nothing is late
    if len(order) == 0:
        return report
    offline = OfflineStore(settings.offline)
    first = _next_import_offset(offline, target)
    taken = order.tolist()
    batch = EventBatch(
        {name: [values[i] for i in taken] for name, values in columns.items()},
        ts[order],
        np.full(len(order), IMPORT_PARTITION, dtype=np.int64),
        np.arange(first, first + len(order), dtype=np.int64),
    )
    if online:
        # The writer appends to the offline log too, in the same order as a live batch.
        writer = ViewWriter(OnlineStore(settings.redis), offline, view, target.version)
        writer.load_positions()
        writer.apply(batch, batch.last_offsets())
    else:
        every = np.arange(len(batch), dtype=np.int64)
        offline.append(view.name, target.version, batch_table(source.schema_, batch, every))
    report.imported = len(order)
    return report


def _nulls(array: pa.Array) -> np.ndarray:
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _read(path: Path, columns: list[str]) -> pa.Table:
    if not path.exists():
        raise StreamingError(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        # The schema's columns as text: the schema, not CSV type inference, decides validity.
        # Only an empty cell is null ("NA" may be a user's name), and a quoted cell may hold
        # line breaks, as a JSON string may.
        options = pcsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=True,
            null_values=[""],
        )
        parse = pcsv.ParseOptions(newlines_in_values=True)
        return pcsv.read_csv(path, parse_options=parse, convert_options=options)
    raise StreamingError(f"{path}: import reads .parquet or .csv files")


def _values(column: pa.ChunkedArray, kind: ValueType, text: bool) -> list[Any]:
    """The column's values as the stream would see them in JSON (None: empty). A value that
    cannot be one stands as an object its rule refuses (`wrong_type`) — never an exception."""
    kind_of_column = column.type
    if pa.types.is_timestamp(kind_of_column) and kind is ValueType.TIMESTAMP:
        return _times_as_text(column)
    if pa.types.is_temporal(kind_of_column):  # dates and times without a zone: not our types
        return _unusable_rows(column)
    try:
        values: list[Any] = column.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):  # e.g. nested out-of-range dates
        return _unusable_rows(column)
    if not text or kind is ValueType.STRING:
        return values
    if kind is ValueType.TIMESTAMP:
        return [_epoch_ms_text(v) for v in values]
    if kind is ValueType.BOOL:
        return [None if v is None else _json_text(str(v).strip().lower()) for v in values]
    return [None if v is None else _json_text(v) for v in values]


def _unusable(kind: pa.DataType) -> object:
    """Stands for a value the import cannot read as any of ours: its rule says `wrong_type`,
    "got <the Arrow type>"."""
    return type(str(kind), (), {})()


def _unusable_rows(column: pa.ChunkedArray) -> list[object]:
    value = _unusable(column.type)
    return [None if null else value for null in _nulls(column.combine_chunks()).tolist()]


def _json_text(cell: Any) -> Any:
    """A CSV cell as JSON reads it: `5` an int, `5.0` a float, `true` a bool; else the text."""
    try:
        return orjson.loads(cell)
    except orjson.JSONDecodeError:
        return cell


def _epoch_ms_text(cell: Any) -> Any:
    if isinstance(cell, str) and cell.isascii() and cell.isdigit():
        return int(cell)  # epoch milliseconds, as text in a CSV
    return cell


def _times_as_text(column: pa.ChunkedArray) -> list[Any]:
    """A timestamp column's values from an Arrow time, as the stream would get them: ISO 8601
    text (without an offset when the column has no timezone, which its rule refuses), or epoch
    ms when out of range (which its rule refuses as `out_of_range`)."""
    naive = column.type.tz is None
    out: list[Any] = []
    for us in _arrow_micros(column):
        if us is None or not MIN_US <= us < MAX_US:
            out.append(None if us is None else us // 1000)
        else:
            when = from_us(us)
            out.append((when.replace(tzinfo=None) if naive else when).isoformat())
    return out


def _timestamps(column: pa.ChunkedArray, text: bool) -> list[int | Problem]:
    """Epoch microseconds per row, or the reason and detail the row's time is unusable."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        return _arrow_times(column)
    if pa.types.is_temporal(kind):
        problem = ("bad_timestamp", f"a {kind} column is not a time with a timezone")
        return [problem] * len(column)
    try:
        values = column.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):
        return [("bad_timestamp", f"a {kind} column is not a time")] * len(column)
    out: list[int | Problem] = []
    for value in values:
        try:
            out.append(parse_timestamp(_epoch_ms_text(value) if text else value))
        except TimestampOutOfRange as exc:
            out.append(("out_of_range", str(exc)))
        except ValueError as exc:
            out.append(("bad_timestamp", str(exc)))
    return out


def _arrow_times(column: pa.ChunkedArray) -> list[int | Problem]:
    """An Arrow timestamp column as the event time of each row, or why it is not one."""
    kind = column.type
    if kind.tz is None:
        return [("bad_timestamp", f"a {kind} column has no timezone")] * len(column)
    out: list[int | Problem] = []
    for us in _arrow_micros(column):
        if us is None:
            out.append(("bad_timestamp", "empty"))
            continue
        try:
            out.append(check_range(us, f"{us} µs since 1970"))
        except TimestampOutOfRange as exc:
            out.append(("out_of_range", str(exc)))
    return out


def _arrow_micros(column: pa.ChunkedArray) -> list[int | None]:
    """Microseconds of an Arrow timestamp column, in Python integers: an Arrow cast to µs
    would overflow (seconds near int64's end) or refuse to drop nanoseconds."""
    raw = pc.cast(column, pa.int64()).to_pylist()
    if column.type.unit == "ns":
        return [None if v is None else v // 1000 for v in raw]
    factor = _US_PER_UNIT[column.type.unit]
    return [None if v is None else v * factor for v in raw]


def _next_import_offset(offline: OfflineStore, target: RegisteredView) -> int:
    last = offline.max_offset(target.view.name, target.version, IMPORT_PARTITION)
    return 0 if last is None else last + 1
