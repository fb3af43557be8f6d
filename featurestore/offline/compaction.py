"""Compaction: the many small files of a date partition (one per batch) merged into one.

A file is never rewritten in place. The merged file (each (partition, offset) once, in that
order, with the inputs' schema) is written durably beside its inputs, and only then are the
inputs removed. A crash between the two leaves both; readers see each (partition, offset) once,
so query results are the same in every state, and the next compaction merges them all again.
The same holds on an object store, which has no rename: the merged object appears whole when its
upload completes (a fresh write-once name), then the inputs are deleted one by one — no manifest
is needed, since no reader ever counts an event twice, whatever it lists.
A reader that listed an input just before it was removed lists the files again
(`OfflineStore.guard`). Files appended while a compaction runs are not its inputs and stay.

`fstore compact VIEW` runs `compact_view`; `compact_due` is the automatic policy, cheap enough to
call after every run of the ingest worker: dates before today (UTC) — which appends have left,
apart from a late event — holding at least `AUTO_MIN_FILES` files.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from itertools import chain, groupby
from pathlib import PurePath

import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.offline.log import OFFSET, PARTITION, SCAN_ROWS, OfflineStore
from featurestore.offline.quarantine import Quarantined

__all__ = [
    "AUTO_MIN_FILES",
    "Compacted",
    "CompactionReport",
    "compact_due",
    "compact_view",
]

AUTO_MIN_FILES = 32


@dataclass(frozen=True)
class Compacted:
    """One date partition: `files` files merged into `path`, holding `rows` events."""

    date: str
    files: int
    rows: int
    path: PurePath


@dataclass
class CompactionReport:
    view: str
    version: int
    compacted: list[Compacted] = field(default_factory=list)
    orphans_removed: list[PurePath] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)


def compact_view(
    offline: OfflineStore,
    view: str,
    version: int,
    *,
    min_files: int = 2,
    before: date | None = None,
) -> CompactionReport:
    """Merge each date partition of a view version's log that holds `min_files` files or more
    (only the dates before `before`, when given) into one file.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from featurestore.config import OfflineSettings
    >>> root = Path(tempfile.mkdtemp())
    >>> store = OfflineStore(OfflineSettings(root=root))
    >>> rows = pa.table({"x": [1.0], "event_timestamp": pa.array([0], pa.timestamp("us", "UTC")),
    ...                  "_partition": pa.array([0], pa.int32()), "_offset": [7]})
    >>> for _ in range(3):
    ...     _ = store.append("v", 1, rows)  # the same event thrice (a replay)
    >>> [(c.date, c.files, c.rows) for c in compact_view(store, "v", 1).compacted]
    [('1970-01-01', 3, 1)]
    >>> len(store.files("v", 1))
    1
    """
    report = CompactionReport(view, version)
    report.orphans_removed = offline.remove_orphans(view, version)
    cutoff = None if before is None else f"date={before.isoformat()}"
    for part, listed in groupby(offline.files(view, version), key=lambda p: p.parent):
        inputs = list(listed)
        if cutoff is not None and part.name >= cutoff:
            continue
        if len(inputs) < max(2, min_files):
            continue
        merged, moved = offline.guard([(view, version)], partial(_merge, offline, part, inputs))
        report.quarantined += moved
        if merged is not None:
            report.compacted.append(merged)
    return report


def compact_due(offline: OfflineStore, view: str, version: int) -> CompactionReport:
    """The automatic policy: dates before today (UTC) with `AUTO_MIN_FILES` files or more."""
    today = datetime.now(UTC).date()
    return compact_view(offline, view, version, min_files=AUTO_MIN_FILES, before=today)


def _merge(offline: OfflineStore, part: PurePath, inputs: list[PurePath]) -> Compacted | None:
    """Write the merged file durably, then remove the inputs (run again after a quarantine)."""
    storage = offline.storage
    listed = set(storage.glob(part, "*.parquet"))
    files = [p for p in inputs if p in listed]
    if len(files) < 2:
        return None  # merged by another compaction, or quarantined, meanwhile
    sql = (
        "SELECT * FROM inputs "  # noqa: S608 - constants
        f"QUALIFY row_number() OVER (PARTITION BY {PARTITION}, {OFFSET}) = 1 "
        f"ORDER BY {PARTITION}, {OFFSET}"
    )
    target = part / f"{uuid.uuid4().hex}.parquet"
    rows = 0
    with offline.connect() as con, storage.writing(target) as temp:
        storage.define_view(con, "inputs", files)
        reader = con.sql(sql).to_arrow_reader(SCAN_ROWS)
        # The sort reads every input before its first row: a bad input fails here, in the guard.
        batches = [] if (first := _first(reader)) is None else [first]
        # DuckDB reads the columns of the first file: write them with that file's Arrow types,
        # so the merged file reads back exactly as its inputs did.
        schema = storage.parquet(files[0]).schema_arrow
        with pq.ParquetWriter(temp, schema) as writer:
            for batch in chain(batches, reader):
                chunk = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
                writer.write_table(chunk)
                rows += batch.num_rows
    _remove(offline, files)
    storage.sync(part)
    return Compacted(part.name.removeprefix("date="), len(files), rows, target)


def _first(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


def _remove(offline: OfflineStore, paths: list[PurePath]) -> None:
    for path in paths:
        offline.storage.remove(path)
