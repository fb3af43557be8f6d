"""`fstore import`: historical events that never went through Kafka, into a view's history.

Rows are validated like the stream (required fields, types, timestamps with a timezone); each
rejected row is reported with its row number and reason, never dropped silently. Accepted rows
are appended to the offline log under the pseudo-partition `IMPORT_PARTITION` with offsets
continuing past earlier imports, so they stay distinct from Kafka's (partition, offset) pairs and
a re-import of the same file is visible as such. With `online=True` they are also merged into the
view's online tiles, in event-time order, exactly once like a batch. Imports into the online state
must come oldest first: the import pseudo-partition has a watermark like any partition, so an
import of history older than a previous one (minus the allowed lateness) counts as late there.
Both paths write the log through `event_table`; the online one is the view version's writer,
with no Kafka involved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from featurestore.config import Settings
from featurestore.definitions import ValueType
from featurestore.events import EventBatch
from featurestore.offline.log import OFFSET, PARTITION, OfflineStore, event_table
from featurestore.online import OnlineStore
from featurestore.registry import RegisteredView
from featurestore.timestamps import parse_timestamp
from featurestore.writer import ViewWriter
from streaming.errors import StreamingError

__all__ = ["IMPORT_PARTITION", "ImportReport", "import_events"]

IMPORT_PARTITION = -1
_ARROW = {
    ValueType.STRING: pa.string(),
    ValueType.INT64: pa.int64(),
    ValueType.FLOAT64: pa.float64(),
    ValueType.BOOL: pa.bool_(),
}


@dataclass
class ImportReport:
    """How many rows were read and imported, and why each of the others was rejected."""

    read: int = 0
    imported: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row number, reason)


def import_events(
    settings: Settings, target: RegisteredView, path: Path, online: bool = False
) -> ImportReport:
    """Validate the rows of `path` (.parquet or .csv) and import the good ones into `target`'s
    offline log, and with `online` into its online state too."""
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

    good = np.ones(table.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    columns: dict[str, pa.Array] = {}
    for name, kind in source.schema_.items():
        if name == source.timestamp_field:
            continue
        column = table[name].combine_chunks()
        try:
            cast = pc.cast(column, _ARROW[kind], safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cast = pa.array([_cast_one(v, kind) for v in column.to_pylist()], _ARROW[kind])
            failed = _nulls(cast) & ~_nulls(column)
            for row in np.flatnonzero(failed).tolist():
                reasons.setdefault(row, f"wrong_type: {name!r} is not {kind}")
        for row in np.flatnonzero(_nulls(column)).tolist():
            reasons.setdefault(row, f"missing_field: {name!r} is empty")
        columns[name] = cast
    ts = np.zeros(table.num_rows, dtype=np.int64)
    for row, value in enumerate(_timestamps(table[source.timestamp_field])):
        if isinstance(value, str):
            reasons.setdefault(row, f"bad_timestamp: {value}")
        else:
            ts[row] = value
    good[list(reasons)] = False
    report.rejected = sorted(reasons.items())

    keep = np.flatnonzero(good)
    order = keep[np.argsort(ts[keep], kind="stable")]  # event-time order: nothing is late
    if len(order) == 0:
        return report
    offline = OfflineStore(settings.offline)
    first = _next_import_offset(offline, target)
    taken = pa.array(order)
    accepted = {name: array.take(taken) for name, array in columns.items()}
    partition = np.full(len(order), IMPORT_PARTITION, dtype=np.int64)
    offsets = np.arange(first, first + len(order), dtype=np.int64)
    if online:
        batch = EventBatch(
            {name: array.to_pylist() for name, array in accepted.items()},
            ts[order],
            partition,
            offsets,
        )
        # The writer appends to the offline log too, in the same order as a live batch.
        writer = ViewWriter(OnlineStore(settings.redis), offline, view, target.version)
        writer.load_positions()
        writer.apply(batch, batch.last_offsets())
    else:
        events = event_table(accepted, ts[order], partition, offsets)
        offline.append(view.name, target.version, events)
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
        options = pcsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=True
        )
        return pcsv.read_csv(path, convert_options=options)
    raise StreamingError(f"{path}: import reads .parquet or .csv files")


def _cast_one(value: object, kind: ValueType) -> object:
    try:
        if kind is ValueType.FLOAT64:
            return float(value)  # type: ignore[arg-type]
        if kind is ValueType.INT64:
            return int(value)  # type: ignore[call-overload]
        if kind is ValueType.BOOL:
            return {"true": True, "false": False}.get(str(value).lower())
        return str(value)
    except (TypeError, ValueError):
        return None


def _timestamps(column: pa.ChunkedArray) -> list[int | str]:
    """Epoch microseconds per row, or the reason the row's time is unusable."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            return [f"{v} has no timezone" for v in column.to_pylist()]
        micros = pc.cast(column, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        return [m if m is not None else "empty" for m in micros]
    out: list[int | str] = []
    for value in column.to_pylist():
        if isinstance(value, str) and value.isdigit():
            value = int(value)  # epoch milliseconds, as text in a CSV
        try:
            out.append(parse_timestamp(value))
        except ValueError as exc:
            out.append(str(exc))
    return out


def _next_import_offset(offline: OfflineStore, target: RegisteredView) -> int:
    events = offline.read_events(target.view.name, target.version)
    if events.num_rows == 0:
        return 0
    imported = pc.filter(events[OFFSET], pc.equal(events[PARTITION], IMPORT_PARTITION))
    return 0 if len(imported) == 0 else int(pc.max(imported).as_py()) + 1
