"""The offline store: an append-only Parquet log of the events the online store applied.

Layout: `<root>/<view>/v<version>/date=YYYY-MM-DD/<uuid>.parquet`, one file per batch and date
(compaction merges a date's files into one: featurestore.offline.compaction). The root is a local
folder or an `s3://bucket/prefix` (featurestore.offline.storage). A file appears whole or not at
all: locally written to a temp file beside it, fsynced, renamed, and its folder fsynced
(featurestore.offline.durable); on S3 uploaded under its final write-once name, which no listing
shows before the upload completes. A worker that crashes after writing a file but before its online
commit writes those events again after the restart, and a compaction that dies between writing
its merged file and removing its inputs leaves both, so readers must see each
(`_partition`, `_offset`) once — every read here does. A file that cannot be read is moved to
quarantine and the read goes on without it (featurestore.offline.quarantine). Every writer of the
log builds its rows with `event_table`, so the file schema the readers rely on has one author.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from itertools import chain
from pathlib import Path, PurePath
from typing import TypeVar

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore.config import OfflineSettings
from featurestore.definitions import ValueType
from featurestore.events import EventBatch
from featurestore.offline.quarantine import QUARANTINE, Quarantined, named_files, sweep
from featurestore.offline.storage import LogStorage, sql_literal
from featurestore.timestamps import EPOCH

__all__ = [
    "OFFSET",
    "PARTITION",
    "SCAN_ROWS",
    "TIMESTAMP",
    "OfflineStore",
    "batch_from_log",
    "batch_table",
    "event_table",
    "sql_ident",
    "sql_literal",
]

TIMESTAMP = "event_timestamp"
_DAY_US = 86_400_000_000
PARTITION = "_partition"
OFFSET = "_offset"
SCAN_ROWS = 65_536
_T = TypeVar("_T")
# DuckDB errors a bad file can cause (a truncated footer, a column it lacks or holds with another
# type); out of memory, an interrupt or a mistake in the SQL never send a file to quarantine.
_FILE_ERRORS = (
    duckdb.IOException,
    duckdb.InvalidInputException,
    duckdb.BinderException,
    duckdb.DataError,
    duckdb.InternalException,
)
_VANISHED_RETRIES = 5

_ARROW_TYPES = {
    ValueType.STRING: pa.string(),
    ValueType.INT64: pa.int64(),
    ValueType.FLOAT64: pa.float64(),
    ValueType.BOOL: pa.bool_(),
    ValueType.TIMESTAMP: pa.string(),  # as the producer sent it; `event_timestamp` is the time
}


def event_table(
    columns: Mapping[str, pa.Array],
    ts: npt.NDArray[np.int64],
    partition: npt.NDArray[np.int64],
    offset: npt.NDArray[np.int64],
) -> pa.Table:
    """Log rows: the source's columns (all but its timestamp field), then the event time
    (`event_timestamp`, µs UTC), `_partition` and `_offset`."""
    return pa.table(
        {
            **columns,
            TIMESTAMP: pa.array(ts, pa.timestamp("us", tz="UTC")),
            PARTITION: pa.array(partition, pa.int32()),
            OFFSET: pa.array(offset, pa.int64()),
        }
    )


def batch_table(
    schema: Mapping[str, ValueType], batch: EventBatch, rows: npt.NDArray[np.int64]
) -> pa.Table:
    """The log rows of the events at `rows` of `batch`, its columns typed by the source schema."""
    take = pa.array(rows)
    columns = {
        name: pa.array(values, _ARROW_TYPES[schema[name]]).take(take)
        for name, values in batch.columns.items()
    }
    return event_table(columns, batch.ts[rows], batch.partition[rows], batch.offset[rows])


def batch_from_log(table: pa.Table, timestamp_field: str) -> EventBatch:
    """Log rows (as `scan_events` yields them) back as the batch the writer applies: the
    inverse of `batch_table`, for a backfill or a rebuild from the log."""
    skip = {TIMESTAMP, PARTITION, OFFSET, timestamp_field}
    columns = {name: table[name].to_pylist() for name in table.column_names if name not in skip}
    micros = pc.cast(table[TIMESTAMP], pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return EventBatch(
        columns,
        micros.to_numpy(),
        table[PARTITION].to_numpy().astype(np.int64),
        table[OFFSET].to_numpy().astype(np.int64),
    )


class OfflineStore:
    """The event log of every view version under one root: a local folder or an S3 prefix."""

    def __init__(self, config: OfflineSettings) -> None:
        self.storage = LogStorage(config)
        self.root = self.storage.root
        self.config = config
        self.quarantined: list[Quarantined] = []  # files this store moved out of the log
        self._opened: set[tuple[str, int]] = set()  # view versions appended to (orphans gone)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection for queries over the log, with the configured memory and spill."""
        con = duckdb.connect()
        spill = self.config.spill_dir or Path(tempfile.gettempdir()) / "fstore-duckdb-spill"
        con.execute(f"SET temp_directory = {sql_literal(spill)}")
        if self.config.memory_limit is not None:
            con.execute(f"SET memory_limit = {sql_literal(self.config.memory_limit)}")
        return con

    def view_dir(self, view: str, version: int) -> PurePath:
        return self.root / view / f"v{version}"

    def quarantine_dir(self, view: str, version: int) -> PurePath:
        """Where the unreadable files of a view version's log went, under their log paths."""
        return self.root / QUARANTINE / view / f"v{version}"

    def files(self, view: str, version: int) -> list[PurePath]:
        """The log's data files (a listing, nothing is read)."""
        return self.storage.glob(self.view_dir(view, version))

    def append(self, view: str, version: int, events: pa.Table) -> list[PurePath]:
        """Write `events` (with `event_timestamp`, `_partition`, `_offset`) as new files.

        The first append of this store to a view version removes the temp files that writers
        killed mid-write left there (never one a live process is writing: durable.is_orphan).
        """
        if (view, version) not in self._opened:
            self.remove_orphans(view, version)
            self._opened.add((view, version))
        if events.num_rows == 0:
            return []
        # Day numbers by integer division: formatting every timestamp as text costs 300x more.
        micros = events[TIMESTAMP].cast(pa.int64()).to_numpy()
        days = micros // _DAY_US
        written = []
        for day in np.unique(days).tolist():
            part = events.filter(pa.array(days == day))
            date = (EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
            directory = self.view_dir(view, version) / f"date={date}"
            self.storage.make_dirs(directory)
            path = directory / f"{uuid.uuid4().hex}.parquet"
            # Readers never see a half-written file, nor lose a written one.
            with self.storage.writing(path) as temp:
                pq.write_table(part, temp)
            written.append(path)
        return written

    def remove_orphans(self, view: str, version: int) -> list[PurePath]:
        """Delete the temp files that dead writers left in a view version's log."""
        return self.storage.remove_orphans(self.view_dir(view, version), "date=*/*.tmp")

    def read_events(self, view: str, version: int) -> pa.Table:
        """Every applied event of a view version, each (partition, offset) once, in that order.

        It holds the whole log in memory: for big logs use `scan_events` or `read_sql`.
        """
        sql = f"SELECT * FROM events ORDER BY {PARTITION}, {OFFSET}"  # noqa: S608 - constants
        found = self.read_sql(view, version, sql)
        return pa.table({}) if found is None else found

    def scan_events(
        self, view: str, version: int, batch_rows: int = SCAN_ROWS
    ) -> Iterator[pa.Table]:
        """`read_events` in chunks of `batch_rows` rows (the last one fewer), in bounded memory.

        DuckDB deduplicates and sorts out of core (within `memory_limit`, spilling to
        `spill_dir`); this process holds about two chunks.
        """
        sql = f"SELECT * FROM events ORDER BY {PARTITION}, {OFFSET}"  # noqa: S608 - constants
        with self.connect() as con:

            def start() -> tuple[pa.RecordBatchReader, pa.RecordBatch | None] | None:
                if not self._define(con, view, version):
                    return None
                reader = con.sql(sql).to_arrow_reader(batch_rows)
                # The sort reads every file before its first row: a bad file fails here.
                try:
                    return reader, reader.read_next_batch()
                except StopIteration:
                    return reader, None

            started = self.guard([(view, version)], start)[0]
            if started is None or started[1] is None:
                return
            reader, first = started
            held: list[pa.RecordBatch] = []
            rows = 0
            for batch in chain([first], reader):
                held.append(batch)
                rows += batch.num_rows
                while rows >= batch_rows:
                    table = pa.Table.from_batches(held, reader.schema)
                    yield table.slice(0, batch_rows)
                    rest = table.slice(batch_rows)
                    held, rows = rest.to_batches(), rest.num_rows
            if rows:
                yield pa.Table.from_batches(held, reader.schema)

    def max_offset(self, view: str, version: int, partition: int) -> int | None:
        """The highest offset of `partition` in a view version's log (None: it has none).

        DuckDB reads two columns of each file (skipping row groups by their statistics).
        """
        found = self.read_sql(
            view,
            version,
            f"SELECT max({OFFSET}) AS m FROM log WHERE {PARTITION} = {int(partition)}",  # noqa: S608
        )
        value = None if found is None else found.column("m")[0].as_py()
        return None if value is None else int(value)

    def max_offsets(self, view: str, version: int) -> dict[int, int]:
        """The highest offset of each Kafka partition (not the import pseudo-partition) in a
        view version's log; empty when it has none."""
        found = self.read_sql(
            view,
            version,
            f"SELECT {PARTITION} AS p, max({OFFSET}) AS m FROM log "  # noqa: S608 - constants
            f"WHERE {PARTITION} >= 0 GROUP BY {PARTITION}",
        )
        if found is None:
            return {}
        return dict(zip(found["p"].to_pylist(), found["m"].to_pylist(), strict=True))

    def read_sql(self, view: str, version: int, sql: str) -> pa.Table | None:
        """The result of `sql` over a view version's log, where `log` names its rows as stored
        and `events` each (partition, offset) once; None when the log has no file.

        For results that fit in memory (aggregates, samples, the newest n rows): DuckDB
        computes them out of core.
        """
        with self.connect() as con:

            def run() -> pa.Table | None:
                if not self._define(con, view, version):
                    return None
                return con.sql(sql).to_arrow_table()

            return self.guard([(view, version)], run)[0]

    def guard(
        self, views: Iterable[tuple[str, int]], run: Callable[[], _T]
    ) -> tuple[_T, list[Quarantined]]:
        """`run()` (a DuckDB read of these view versions' logs), and the files it quarantined.

        When it fails on a file that cannot be read, the file goes to quarantine (recorded in
        `self.quarantined`, with a warning) and `run` runs again without it: `run` must list
        the files again (a glob in its SQL does). A file that vanished between DuckDB's listing
        and its read (compacted, or quarantined by another process) makes it run again too.
        """
        directories = [self.view_dir(view, version) for view, version in dict.fromkeys(views)]
        moved: list[Quarantined] = []
        vanished = 0
        while True:
            try:
                return run(), moved
            except (*_FILE_ERRORS, pa.ArrowException, OSError) as exc:
                # pyarrow's own errors come from objects (an Arrow dataset that DuckDB scans);
                # a local read fails inside DuckDB, and anything else there is not a file's.
                direct = not isinstance(exc, _FILE_ERRORS)
                if direct and self.storage.local:
                    raise
                named = named_files(str(exc), directories)
                gone = any(not self.storage.exists(p) for p in named)
                if (gone or _vanished(exc)) and vanished < _VANISHED_RETRIES:
                    vanished += 1
                    continue
                if self.storage.unreachable(exc):
                    raise self.storage.error("reading the offline log", exc) from exc
                found, changed = sweep(
                    self.storage, directories, named, (TIMESTAMP, PARTITION, OFFSET)
                )
                if not changed:
                    if direct:
                        raise self.storage.error("reading the offline log", exc) from exc
                    raise
                moved += found
                self.quarantined += found

    def _define(self, con: duckdb.DuckDBPyConnection, view: str, version: int) -> bool:
        """Views `log` and `events` over the log's files on `con`; False when it has none."""
        files = self.files(view, version)
        if not files:
            return False
        self.storage.define_view(con, "log", files)
        con.execute(
            "CREATE OR REPLACE TEMP VIEW events AS SELECT * FROM log "  # noqa: S608 - constants
            f"QUALIFY row_number() OVER (PARTITION BY {PARTITION}, {OFFSET}) = 1"
        )
        return True


def sql_ident(name: str) -> str:
    """A quoted SQL identifier: every column name from definitions or entity rows goes through
    here."""
    return '"' + name.replace('"', '""') + '"'


def _vanished(exc: Exception) -> bool:
    """Whether a read failed on an object that was removed after it was listed (compacted or
    quarantined meanwhile), as pyarrow words it."""
    text = str(exc)
    return isinstance(exc, FileNotFoundError) or any(
        sign in text for sign in ("Path does not exist", "NoSuchKey", "NO_SUCH_KEY", "NOT_FOUND")
    )
