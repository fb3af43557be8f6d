"""Point-in-time correct feature values from the offline log, with DuckDB.

For each entity row at time t, every windowed feature is computed from the raw applied events
with the window formula of docs/semantics.md: events of the same entity with
`floor(e/T) >= floor(t/T) - n + 1` and `e <= t`. Per view, the events and the entity rows are
stacked into one stream sorted per entity by time, and every window is a frame over it that ends
at the row itself, so no event after t can reach any value. No (row, event) pairs are ever formed:
the work grows with events + rows, not with their product. DuckDB sorts out of core (it spills to
disk), and `COPY ... TO` streams the result to Parquet instead of holding it.

A log file DuckDB cannot read goes to quarantine and the query runs again without it
(`OfflineStore.guard`): the query records those files in `quarantined`, and an Arrow result
carries them in its schema metadata under `QUARANTINED_KEY`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from featurestore.definitions import FeatureView, Function, ValueType
from featurestore.errors import RequestError
from featurestore.offline.log import (
    OFFSET,
    PARTITION,
    TIMESTAMP,
    OfflineStore,
    sql_ident,
    sql_literal,
)
from featurestore.offline.quarantine import Quarantined
from featurestore.offline.sketches import (
    distinct_count_sql,
    percentile_keys_sql,
    percentile_sql,
    register_sketches,
    top_k_sql,
)
from featurestore.registry import RegisteredView
from featurestore.tiles import TileLayout
from featurestore.timestamps import EPOCH
from featurestore.windows import TileWindow, frame_sql

__all__ = [
    "QUARANTINED_KEY",
    "HistoricalQuery",
]

QUARANTINED_KEY = b"fstore.quarantined"  # Arrow schema metadata: JSON list of moved log files

ROW = "__row"
_T = TypeVar("_T")
_SQL_TYPES = {
    ValueType.STRING: {"VARCHAR"},
    ValueType.INT64: {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER"},
    ValueType.FLOAT64: {"DOUBLE", "FLOAT"},
    ValueType.BOOL: {"BOOLEAN"},
}


def _window_sql(function: Function, column: str | None, window: str) -> str:
    """A window aggregate over the stacked stream, where entity rows carry NULLs."""
    value = f"{sql_ident(column)}::DOUBLE" if column is not None else ""
    if function is Function.COUNT:
        return f"count(__event) OVER {window}"
    if function is Function.SUM:
        return f"coalesce(sum({value}) OVER {window}, 0.0)"
    return {
        Function.MEAN: f"avg({value}) OVER {window}",
        Function.MIN: f"min({value}) OVER {window}",
        Function.MAX: f"max({value}) OVER {window}",
        Function.VARIANCE: f"var_samp({value}) OVER {window}",
        Function.STDDEV: f"stddev_samp({value}) OVER {window}",
    }[function]


class HistoricalQuery:
    """One training-set query: entity rows in, one column per requested feature out."""

    def __init__(
        self,
        offline: OfflineStore,
        entities: Any,
        resolved: Sequence[tuple[RegisteredView, str]],
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        statuses: bool = False,
    ) -> None:
        self.offline = offline
        self.statuses = statuses
        self.resolved = resolved
        self.timestamp_column = timestamp_column
        self.con = offline.connect()
        register_sketches(self.con)
        self.entity_columns = self._load_entities(entities)
        self.names = self._column_names(full_feature_names)
        self.quarantined: list[Quarantined] = []  # log files moved out while this query ran

    def to_arrow(self) -> pa.Table:
        table: pa.Table = self._guarded(lambda: self.con.sql(self.sql()).to_arrow_table())
        if not self.quarantined:
            return table
        moved = json.dumps([str(q.path) for q in self.quarantined]).encode()
        return table.replace_schema_metadata(
            {**(table.schema.metadata or {}), QUARANTINED_KEY: moved}
        )

    def to_parquet(self, path: str | Path) -> Path:
        """Stream the result into a Parquet file without holding it in memory."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._guarded(
            lambda: self.con.execute(
                f"COPY ({self.sql()}) TO {sql_literal(target)} (FORMAT parquet)"
            )
        )
        return target

    def _guarded(self, run: Callable[[], _T]) -> _T:
        """`run` (which builds the SQL again, so the log's files are listed again) with the
        log's unreadable files quarantined."""
        views = [(r.name, r.version) for r, _feature in self.resolved]
        result, moved = self.offline.guard(views, run)
        self.quarantined += moved
        return result

    def sql(self) -> str:
        views: dict[tuple[str, int], RegisteredView] = {}
        for registered, _feature in self.resolved:
            views.setdefault((registered.name, registered.version), registered)
        parts = {
            key: self._view_sql(registered, i) for i, (key, registered) in enumerate(views.items())
        }
        carried = ", ".join(f"l.{sql_ident(c)}" for c in self.entity_columns)
        selected = []
        for (registered, feature), name in zip(self.resolved, self.names, strict=True):
            alias = f"v{list(views).index((registered.name, registered.version))}"
            selected.append(f"{alias}.{sql_ident(feature)} AS {sql_ident(name)}")
            if self.statuses:
                status = f"{alias}.{sql_ident(feature + '__status')}"
                selected.append(f"{status} AS {sql_ident(name + '__status')}")
        joins = " ".join(
            f"JOIN ({sql}) v{i} ON v{i}.{ROW} = l.{ROW}" for i, sql in enumerate(parts.values())
        )
        return f"SELECT {carried}, {', '.join(selected)} FROM labels l {joins} ORDER BY l.{ROW}"

    def _view_sql(self, registered: RegisteredView, index: int) -> str:
        """One view's features for every entity row, by window functions over a merged stream.

        The view's events and the entity rows are stacked and sorted per entity by time. A
        window of n tiles is a RANGE frame reaching back from a row at t to the far edge
        `(floor(t/T) - n + 1)·T` — `t mod T + (n-1)·T` before t, a per-row offset — and up to t
        inclusive (RANGE's CURRENT ROW takes the events at exactly t), so no event after t can
        reach a value. Entity rows carry NULL values and are not counted. `last` is the newest
        event by (time, partition, offset) sorted before the row — kept when it is inside the
        window — and its time is the newest event time the statuses need.
        """
        view = registered.view
        layout = TileLayout(view)
        tile = view.tile_us
        self._check_keys(registered)
        events = self._events_sql(registered, f"events{index}")
        keys = [sql_ident(k) for k in view.join_keys]
        columns = sorted({f.column for f in layout.features if f.column is not None})
        stacked = (
            f"SELECT {', '.join(keys)}, __ts, 0 AS __label, {PARTITION}, {OFFSET}, "
            f"NULL::BIGINT AS {ROW}, 1 AS __event"
            + "".join(f", {sql_ident(c)}" for c in columns)
            + f" FROM {events} UNION ALL "
            f"SELECT {', '.join(keys)}, __t, 1, NULL, NULL, {ROW}, NULL"
            + "".join(f", NULL AS {sql_ident(c)}" for c in columns)
            + " FROM labels"
        )
        by_entity = f"PARTITION BY {', '.join(keys)}"
        spans = layout.windows
        frames = {
            w: f"w{i} AS ({by_entity} ORDER BY __ts {frame_sql(w, '__ts', tile)})"
            for i, w in enumerate(spans)
        }
        newest = (
            f"OVER ({by_entity} ORDER BY __ts, __label, {PARTITION}, {OFFSET} "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        )
        inner = [
            f"last_value(CASE WHEN __event = 1 THEN __ts END IGNORE NULLS) {newest} AS __last_ts"
        ]
        inner += [
            f"last_value({_as_value(view, c)} IGNORE NULLS) {newest} AS {sql_ident('__last_' + c)}"
            for c in columns
            if any(
                f.function is Function.LAST and f.column == c and f.window.cuts_at_read_time
                for f in layout.features
            )
        ]
        # The newest event in each window: for a window ending at t, the newest event up to
        # t when it is inside the window; for one ending on an earlier tile, the frame's own.
        window_newest: dict[TileWindow, str] = {}
        for i, w in enumerate(spans):
            if w.is_lifetime:
                window_newest[w] = "__last_ts"
            elif w.cuts_at_read_time:
                window_newest[w] = (
                    f"CASE WHEN __last_ts >= {_start_sql(w, tile)} THEN __last_ts END"
                )
            else:
                inner.append(f"max(CASE WHEN __event = 1 THEN __ts END) OVER w{i} AS __newest{i}")
                window_newest[w] = f"__newest{i}"
        outer = []
        sketches: dict[
            tuple[str, float, TileWindow], str
        ] = {}  # percentile sketch -> its list column
        for i, feature in enumerate(layout.features):
            span = feature.window
            window = f"w{spans.index(span)}"
            if feature.function is Function.LAST and span.cuts_at_read_time:
                last = sql_ident(f"__last_{feature.column}")
                value = f"CASE WHEN {window_newest[span]} IS NOT NULL THEN {last} END"
            elif feature.function is Function.FIRST:
                # The oldest event of the window by (time, partition, offset); entity rows
                # carry a NULL key, which arg_min passes over.
                oldest = f"CASE WHEN __event = 1 THEN (__ts, {PARTITION}, {OFFSET}) END"
                value_sql = _as_value(view, feature.column or "")
                inner.append(f"arg_min({value_sql}, {oldest}) OVER {window} AS __f{i}")
                value = f"__f{i}"
            elif feature.function is Function.TOP_K:
                # Counted per window with the rule the online reads use (frequencies.py).
                column = sql_ident(feature.column or "")
                name = f"__k{i}"
                inner.append(f"list({column}) OVER {window} AS {name}")
                value = top_k_sql(name, feature.n or 0)
            elif feature.function is Function.LAST_N:
                # The window's events as (time, partition, offset, value) structs, sorted
                # descending (the newest first, as Redis orders them), cut to n; entity rows
                # have no partition. Sorted in the outer query: DuckDB's lambdas over the
                # window expression itself answered wrongly.
                column = feature.column or ""
                name = f"__n{i}"
                entry = (
                    f"struct_pack(t := __ts, p := {PARTITION}, o := {OFFSET}, "
                    f"v := {_as_value(view, column)})"
                )
                inner.append(f"list({entry}) OVER {window} AS {name}")
                events = f"list_filter({name}, lambda x: x.p IS NOT NULL)"
                newest_n = f"list_slice(list_reverse_sort({events}), 1, {feature.n})"
                value = (
                    f"CASE WHEN len({events}) = 0 THEN NULL "
                    f"ELSE list_transform({newest_n}, lambda x: x.v) END"
                )
            elif feature.function is Function.APPROX_PERCENTILE:
                # One list of bucket keys per (column, accuracy, window), shared by its
                # percentiles (percentiles.py: the same keys and quantile as Redis's).
                column, accuracy = feature.column or "", feature.accuracy or 0.0
                sketch = (column, accuracy, span)
                if sketch not in sketches:
                    sketches[sketch] = f"__q{len(sketches)}"
                    keys_sql = percentile_keys_sql(sql_ident(column), accuracy, window)
                    inner.append(f"{keys_sql} AS {sketches[sketch]}")
                value = percentile_sql(sketches[sketch], feature.quantile or 0.0, accuracy)
            else:
                if feature.function is Function.APPROX_COUNT_DISTINCT:
                    column = feature.column or ""
                    kind = view.source.schema_[column]
                    sql = f"{distinct_count_sql(sql_ident(column), kind, window)}::DOUBLE"
                elif feature.function is Function.LAST:
                    # The newest by (time, partition, offset) inside a frame that ends before t.
                    sql = (
                        f"max_by({_as_value(view, feature.column or '')}, "
                        f"CASE WHEN __event = 1 THEN [__ts, {PARTITION}, {OFFSET}] END) "
                        f"OVER {window}"
                    )
                else:
                    sql = _window_sql(feature.function, feature.column, window)
                inner.append(f"{sql} AS __f{i}")
                value = f"__f{i}"
            outer.append(f"{value} AS {sql_ident(feature.name)}")
            if self.statuses:
                # As online reads report it: missing when the window holds no event (a count
                # or sum of nothing reads 0, yet it is missing), stale when the newest event in
                # the window is older than the view's ttl.
                newest_in = window_newest[span]
                stale = "FALSE" if view.ttl_us is None else f"{newest_in} < __ts - {view.ttl_us}"
                outer.append(
                    f"CASE WHEN {newest_in} IS NULL THEN 'missing' "
                    f"WHEN {stale} THEN 'stale' ELSE 'ok' END "
                    f"AS {sql_ident(feature.name + '__status')}"
                )
        return (
            f"SELECT {ROW}, {', '.join(outer)} FROM ("
            f"SELECT {ROW}, __ts, {', '.join(inner)} FROM ({stacked}) "
            f"WINDOW {', '.join(frames.values())} QUALIFY {ROW} IS NOT NULL)"
        )

    def _events_sql(self, registered: RegisteredView, name: str) -> str:
        """The view's applied events, each (partition, offset) once, pruned to the rows' dates
        (the files of other dates are never opened)."""
        view = registered.view
        # fetchall: an unfinished result would keep the connection from registering objects.
        [(first, last)] = self.con.execute(
            f"SELECT min(__t) - {view.max_window_us}, max(__t) FROM labels"
        ).fetchall()
        files = self.offline.files(view.name, registered.version)
        if first is not None and last is not None:
            # A lifetime window reaches back to the entity's first event: no lower date.
            low = "date=" if view.has_lifetime else f"date={_day(first)}"
            high = f"date={_day(last)}"
            files = [f for f in files if low <= f.parent.name <= high]
        if not files:
            columns = [
                f"NULL::{_sql_type(t)} AS {sql_ident(c)}"
                for c, t in view.source.schema_.items()
                if c != view.source.timestamp_field
            ]
            # A view like the other case, so a query run again (after a quarantine) can replace it.
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {', '.join(columns)}, "
                f"NULL::BIGINT AS __ts, NULL::INTEGER AS {PARTITION}, NULL::BIGINT AS {OFFSET} "
                "LIMIT 0"
            )
            return name
        self.offline.storage.define_view(self.con, f"{name}_files", files)
        newest = "" if last is None else f"WHERE epoch_us({TIMESTAMP}) <= {int(last)}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT *, epoch_us({TIMESTAMP}) AS __ts "
            f"FROM {name}_files {newest} "
            f"QUALIFY row_number() OVER (PARTITION BY {PARTITION}, {OFFSET}) = 1"
        )
        return name

    def _check_keys(self, registered: RegisteredView) -> None:
        schema = registered.view.source.schema_
        for key in registered.view.join_keys:
            if key not in self.entity_columns:
                raise RequestError(
                    f"view {registered.name!r} is keyed by {registered.view.join_keys}; the "
                    f"entity rows lack {key!r} (columns: {sorted(self.entity_columns)})"
                )
            given, wanted = self.entity_columns[key], schema[key]
            if given not in _SQL_TYPES.get(wanted, set()):
                raise RequestError(
                    f"entity key {key!r} is {given} in the entity rows but {wanted} in "
                    f"{registered.name!r}'s source; cast it"
                )

    def _load_entities(self, entities: Any) -> dict[str, str]:
        if isinstance(entities, str | Path):
            self.con.execute(
                "CREATE TEMP VIEW entity_rows AS SELECT * EXCLUDE (file_row_number), "
                f"file_row_number AS {ROW} "
                f"FROM read_parquet({sql_literal(entities)}, file_row_number = true)"
            )
        else:
            if not isinstance(entities, pa.Table):
                if not (hasattr(entities, "columns") and hasattr(entities, "to_numpy")):
                    raise RequestError(
                        "entity rows must be a pandas DataFrame, a pyarrow Table or a Parquet "
                        f"path, not {type(entities).__name__}"
                    )
                entities = pa.Table.from_pandas(entities, preserve_index=False)
            numbered = entities.append_column(ROW, pa.array(range(entities.num_rows), pa.int64()))
            self.con.register("entity_rows", numbered)
        relation = self.con.sql("SELECT * FROM entity_rows LIMIT 0")
        columns = {
            c: str(t) for c, t in zip(relation.columns, relation.types, strict=True) if c != ROW
        }
        if self.timestamp_column not in columns:
            raise RequestError(
                f"entity rows have no timestamp column {self.timestamp_column!r} "
                f"(columns: {sorted(columns)}); pass timestamp_column=..."
            )
        kind = columns[self.timestamp_column]
        if kind.startswith("TIMESTAMP") and "TIME ZONE" not in kind:
            warnings.warn(
                f"timestamp column {self.timestamp_column!r} has no timezone; read as UTC",
                stacklevel=4,
            )
        elif kind != "TIMESTAMP WITH TIME ZONE":
            raise RequestError(
                f"timestamp column {self.timestamp_column!r} is {kind}; it must be a timestamp"
            )
        # epoch_us of a zone-less timestamp reads its wall clock as UTC, as the warning says.
        self.con.execute(
            f"CREATE TEMP VIEW labels AS SELECT *, epoch_us({sql_ident(self.timestamp_column)}) "
            "AS __t "
            "FROM entity_rows"
        )
        return columns

    def _column_names(self, full: bool) -> list[str]:
        names = [
            f"{registered.name}__{feature}" if full else feature
            for registered, feature in self.resolved
        ]
        taken = set(self.entity_columns)
        clashes = sorted({n for n in names if names.count(n) > 1 or n in taken})
        if clashes:
            raise RequestError(
                f"feature columns {clashes} clash with each other or with the entity columns; "
                "pass full_feature_names=True to name them view__feature"
            )
        return names


def _start_sql(window: TileWindow, tile: int) -> str:
    """The µs start of a window's first tile, for a window ending at the row's time `__ts`."""
    return f"(__ts - (__ts % {tile} + {tile}) % {tile} - {(window.length - 1) * tile})"


def _as_value(view: FeatureView, column: str) -> str:
    """A column as `first` / `last` give it: a string as it is, anything else as a DOUBLE
    (bools 1.0 / 0.0), as the online tiles hold it."""
    if view.source.schema_[column] is ValueType.STRING:
        return sql_ident(column)
    return f"{sql_ident(column)}::DOUBLE"


def _day(us: int) -> str:
    """The UTC date of a time in µs, as the log's `date=` folders name it."""
    return (EPOCH + timedelta(microseconds=int(us))).strftime("%Y-%m-%d")


def _sql_type(kind: ValueType) -> str:
    return {
        ValueType.STRING: "VARCHAR",
        ValueType.INT64: "BIGINT",
        ValueType.FLOAT64: "DOUBLE",
        ValueType.BOOL: "BOOLEAN",
        ValueType.TIMESTAMP: "VARCHAR",
    }[kind]
