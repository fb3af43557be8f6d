"""The offline store: an append-only Parquet log of the events the online store applied.

Layout: `<root>/<view>/v<version>/date=YYYY-MM-DD/<uuid>.parquet`, one file per batch and date.
Files are only ever added. A worker that crashes after writing a file but before its online
commit writes those events again after the restart, so readers must see each
(`_partition`, `_offset`) once — `read_events` does. Every writer of the log builds its rows with
`event_table`, so the file schema the readers rely on has one author.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.config import OfflineSettings
from featurestore.definitions import ValueType
from featurestore.events import EventBatch
from featurestore.timestamps import EPOCH

__all__ = [
    "OFFSET",
    "PARTITION",
    "TIMESTAMP",
    "OfflineStore",
    "batch_table",
    "event_table",
    "sql_literal",
]

TIMESTAMP = "event_timestamp"
_DAY_US = 86_400_000_000
PARTITION = "_partition"
OFFSET = "_offset"

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


class OfflineStore:
    """The event log of every view version under one root directory."""

    def __init__(self, config: OfflineSettings) -> None:
        self.root = config.root
        self.config = config

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection for queries over the log, with the configured memory and spill."""
        con = duckdb.connect()
        spill = self.config.spill_dir or Path(tempfile.gettempdir()) / "fstore-duckdb-spill"
        con.execute(f"SET temp_directory = {sql_literal(spill)}")
        if self.config.memory_limit is not None:
            con.execute(f"SET memory_limit = {sql_literal(self.config.memory_limit)}")
        return con

    def view_dir(self, view: str, version: int) -> Path:
        return self.root / view / f"v{version}"

    def append(self, view: str, version: int, events: pa.Table) -> list[Path]:
        """Write `events` (with `event_timestamp`, `_partition`, `_offset`) as new files."""
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
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{uuid.uuid4().hex}.parquet"
            tmp = path.with_suffix(".tmp")
            pq.write_table(part, tmp)
            tmp.rename(path)  # readers never see a half-written file
            written.append(path)
        return written

    def read_events(self, view: str, version: int) -> pa.Table:
        """Every applied event of a view version, each (partition, offset) once."""
        files = self.view_dir(view, version) / "*" / "*.parquet"
        if not any(self.view_dir(view, version).glob("*/*.parquet")):
            return pa.table({})
        query = (
            f"SELECT * EXCLUDE (date) FROM read_parquet({sql_literal(files)}, "  # noqa: S608
            "hive_partitioning = true) "
            f"QUALIFY row_number() OVER (PARTITION BY {PARTITION}, {OFFSET}) = 1 "
            f"ORDER BY {PARTITION}, {OFFSET}"
        )
        with self.connect() as con:
            return con.sql(query).to_arrow_table()


def sql_literal(text: str | Path) -> str:
    """A quoted SQL string: every path that goes into DuckDB SQL goes through here."""
    return "'" + str(text).replace("'", "''") + "'"
