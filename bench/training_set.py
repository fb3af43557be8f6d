"""Training-set benchmark: `get_historical_features` over the offline log (see BENCHMARKS.md).

Workload: `--events` events of `--users` users spread evenly over `--days` days of event time,
written to the offline Parquet log as the worker writes it (`OfflineStore.append`, one call per
`--batch-events` events, so one file per batch and date); `--labels` label rows (user, time,
label) drawn uniformly over the same users and time range. The view has count / sum / max of
`amount` over 10m, 1h and 24h (9 windowed features) and `last` of `amount` over the same windows
(3 features), in 1-minute tiles. No Kafka or Redis is needed.

Each measurement runs in a subprocess of its own, so its peak RSS (VmHWM) is the query's alone:

1. ours — `FeatureStore.get_historical_features(labels.parquet, 12 features, output=...)`,
   streaming the training set to Parquet, the product as it ships (DuckDB's default settings);
2. floor — one hand-written DuckDB statement over the same files that computes the same 12
   features (window functions over the events and label rows of each user, sorted once);
   both outputs are compared value by value on sampled rows, and both with a numpy brute force;
3. latest only — ours with just the 3 `last` features: the part Feast can do at all (and the
   floor's formulation of just those, for reference);
4. Feast (its own virtualenv, `bench/feast_app.py`) joining the raw events' `amount` onto the
   same label rows with TTLs of 10m, 1h and 24h — a point-in-time "latest value" join;
5. scaling — ours (12 features) and the floor at each size of `--scaling`, with the same
   users, days and label rows;
6. out of core — ours once more with `offline.memory_limit` at `--memory-limit` (256MB), far
   below its working set, so DuckDB spills; its output must equal the unlimited one.

Progress goes to stderr; the last line on stdout is one JSON object with the figures.

    python bench/training_set.py            # the full run (11-15 minutes on 2 cores)
    python bench/training_set.py --quick    # tiny sizes, under a minute (no Feast unless asked)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess  # noqa: S404 - the measured queries run as subprocesses
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _cli import add_common_arguments
from _machine import Meter, machine, peak_rss_mb, wait_for_quiet
from _peers import FEAST_VERSION, feast_python
from _report import emit, log, ratio, show
from _services import register_views

from featurestore.config import OfflineSettings, RegistrySettings, Settings
from featurestore.definitions import (
    Aggregation,
    Entity,
    FeatureView,
    Function,
    KafkaSource,
    ValueType,
)
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.registry import Registry
from featurestore.store import FeatureStore

HERE = Path(__file__).resolve().parent
VIEW = "txn"
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DAY_US = 86_400_000_000
TILE_US = 60_000_000
WINDOWS = {"10m": 10, "1h": 60, "24h": 1440}  # in tiles
WINDOWED = [
    *(f"count_{w}" for w in WINDOWS),
    *(f"amount_sum_{w}" for w in WINDOWS),
    *(f"amount_max_{w}" for w in WINDOWS),
]
LATEST = [f"amount_last_{w}" for w in WINDOWS]
FEATURES = WINDOWED + LATEST
GOALS = {"peak_rss_mb": 4096, "floor_ratio": 1.5, "feast_ratio": 5.0}


# -- the workload --------------------------------------------------------------------------------


def make_view() -> FeatureView:
    source = KafkaSource(
        name=f"{VIEW}_events",
        topic=f"bench.{VIEW}",
        timestamp_field="ts",
        schema={"user_id": ValueType.STRING, "amount": ValueType.FLOAT64},
    )
    windows = list(WINDOWS)
    return FeatureView(
        name=VIEW,
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=source,
        tile="1m",
        aggregations=[
            Aggregation(function=Function.COUNT, windows=windows),
            *(
                Aggregation(column="amount", function=function, windows=windows)
                for function in (Function.SUM, Function.MAX, Function.LAST)
            ),
        ],
    )


@dataclass
class Events:
    """Generated events in time order, as numpy columns (kept for the brute-force check)."""

    user: np.ndarray
    ts: np.ndarray  # microseconds, strictly increasing: no two events share a time
    amount: np.ndarray
    partition: np.ndarray
    offset: np.ndarray


def user_names(users: int) -> pa.Array:
    return pa.array([f"u{i:05d}" for i in range(users)], pa.string())


def generate_events(count: int, users: int, days: float, partitions: int, seed: int) -> Events:
    """`count` events over `days`, one per slot of `span / count` µs at a random point in it.

    Users are uniform; a user's partition is `user % partitions` and offsets count up per
    partition in time order, as a topic keyed by user would hold them.
    """
    rng = np.random.default_rng([seed, count])
    step = int(days * DAY_US) // count
    ts = START_US + np.arange(count, dtype=np.int64) * step + rng.integers(0, step, count)
    user = rng.integers(0, users, count)
    partition = (user % partitions).astype(np.int32)
    order = np.argsort(partition, kind="stable")  # stable: time order within a partition
    sizes = np.bincount(partition, minlength=partitions)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    offset = np.empty(count, np.int64)
    offset[order] = np.arange(count, dtype=np.int64) - first
    amount = np.round(rng.gamma(2.0, 25.0, count), 2)
    return Events(user, ts, amount, partition, offset)


def write_log(root: Path, events: Events, users: int, batch: int) -> dict[str, Any]:
    """Append the events to the offline log in worker-sized batches; the files' count and size."""
    store = OfflineStore(OfflineSettings(root=root))
    names = user_names(users)
    began = time.perf_counter()
    files = 0
    for low in range(0, len(events.ts), batch):
        part = slice(low, low + batch)
        table = pa.table(
            {
                "user_id": names.take(pa.array(events.user[part])),
                "amount": pa.array(events.amount[part], pa.float64()),
                "event_timestamp": pa.array(events.ts[part], pa.timestamp("us", tz="UTC")),
                "_partition": pa.array(events.partition[part], pa.int32()),
                "_offset": pa.array(events.offset[part], pa.int64()),
            }
        )
        files += len(store.append(VIEW, 1, table))
    size = sum(f.stat().st_size for f in store.view_dir(VIEW, 1).glob("date=*/*.parquet"))
    return {"files": files, "bytes": size, "seconds": round(time.perf_counter() - began, 2)}


def write_labels(path: Path, count: int, users: int, days: float, seed: int) -> None:
    rng = np.random.default_rng([seed, count, 1])
    ts = START_US + rng.integers(0, int(days * DAY_US), count)
    table = pa.table(
        {
            "user_id": user_names(users).take(pa.array(rng.integers(0, users, count))),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "label": pa.array(rng.integers(0, 2, count), pa.int8()),
        }
    )
    pq.write_table(table, path)


def write_feast_source(path: Path, events: Events, users: int) -> None:
    """The raw events as one Parquet file: Feast's `last` is its latest row per entity."""
    table = pa.table(
        {
            "user_id": user_names(users).take(pa.array(events.user)),
            "amount": pa.array(events.amount, pa.float64()),
            "event_timestamp": pa.array(events.ts, pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, path)


# -- the measured processes ----------------------------------------------------------------------


def child_ours(spec: dict[str, Any]) -> None:
    """The product's entry point, as a user calls it: labels from Parquet, result to Parquet."""
    store = FeatureStore(Settings(**spec["settings"]))
    began, cpu = time.perf_counter(), time.process_time()
    store.get_historical_features(
        Path(spec["labels"]),
        features=[f"{VIEW}:{name}" for name in spec["features"]],
        output=spec["output"],
    )
    emit(
        {
            "seconds": time.perf_counter() - began,
            "cpu_seconds": time.process_time() - cpu,
            "rss_mb": peak_rss_mb(),
        }
    )


def literal(text: str | Path) -> str:
    """A quoted SQL string: every path goes through here."""
    return "'" + str(text).replace("'", "''") + "'"


def floor_sql(log_dir: Path, labels: Path, features: list[str]) -> str:
    """`features` in one query, by window functions over events and label rows together.

    Events and label rows of a user are sorted together by time; each label row's windows are
    RANGE frames reaching back to the far edge of docs/semantics.md, `(floor(t/T) - n + 1)·T`,
    i.e. `t mod T + (n-1)·T` before t, and up to t inclusive (peers). `last` is the newest event
    by (time, partition, offset): the last event row before the label row in that order, kept
    when it is inside the window. Each (partition, offset) counts once.
    """
    frames, columns = [], []
    for window, tiles in WINDOWS.items():
        wanted = [f for f in WINDOWED if f.endswith(f"_{window}") and f in features]
        if not wanted:
            continue
        reach = f"ts % {TILE_US} + {(tiles - 1) * TILE_US}"
        frames.append(
            f"w{window} AS (PARTITION BY user_id ORDER BY ts "
            f"RANGE BETWEEN {reach} PRECEDING AND CURRENT ROW)"
        )
        columns += [
            {
                f"count_{window}": f"count(is_event) OVER w{window}",
                f"amount_sum_{window}": f"coalesce(sum(amount) OVER w{window}, 0.0)",
                f"amount_max_{window}": f"max(amount) OVER w{window}",
            }[name]
            + f" AS {name}"
            for name in wanted
        ]
    latest = [
        f"CASE WHEN last_ts >= (ts // {TILE_US} - {tiles - 1}) * {TILE_US} "
        f"THEN last_amount END AS amount_last_{window}"
        for window, tiles in WINDOWS.items()
        if f"amount_last_{window}" in features
    ]
    if latest:
        newest = (
            "OVER (PARTITION BY user_id ORDER BY ts, is_label, p, o "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        )
        columns += [
            f"last_value(amount IGNORE NULLS) {newest} AS last_amount",
            f"last_value(CASE WHEN is_event = 1 THEN ts END IGNORE NULLS) {newest} AS last_ts",
        ]
    window_clause = f"WINDOW {', '.join(frames)}" if frames else ""
    selected = [f for f in WINDOWED if f in features] + latest
    return f"""
      WITH events AS (
        SELECT user_id, epoch_us(event_timestamp) AS ts, amount, _partition AS p, _offset AS o
        FROM read_parquet({literal(log_dir / "date=*" / "*.parquet")})
        QUALIFY row_number() OVER (PARTITION BY _partition, _offset) = 1
      ), labels AS (
        SELECT *, file_row_number AS row
        FROM read_parquet({literal(labels)}, file_row_number = true)
      ), together AS (
        SELECT user_id, ts, amount, p, o, NULL::BIGINT AS row, 1 AS is_event, 0 AS is_label
        FROM events
        UNION ALL
        SELECT user_id, epoch_us(event_timestamp), NULL, NULL, NULL, row, NULL, 1 FROM labels
      ), windowed AS (
        SELECT row, ts, {", ".join(columns)}
        FROM together
        {window_clause}
        QUALIFY row IS NOT NULL
      )
      SELECT l.user_id, l.event_timestamp, l.label, {", ".join(selected)}
      FROM labels l JOIN windowed w USING (row)
      ORDER BY row
    """  # noqa: S608 - names are constants, paths go through literal()


def child_floor(spec: dict[str, Any]) -> None:
    con = duckdb.connect()
    query = floor_sql(Path(spec["log_dir"]), Path(spec["labels"]), spec["features"])
    began, cpu = time.perf_counter(), time.process_time()
    con.execute(f"COPY ({query}) TO {literal(spec['output'])} (FORMAT parquet)")
    emit(
        {
            "seconds": time.perf_counter() - began,
            "cpu_seconds": time.process_time() - cpu,
            "rss_mb": peak_rss_mb(),
        }
    )


def child_explain(spec: dict[str, Any]) -> None:
    """EXPLAIN ANALYZE of our query (as HistoricalQuery builds it) and of the floor, to stderr."""
    settings = Settings(**spec["settings"])
    registered = Registry(settings.registry).get_view(VIEW)
    ours = HistoricalQuery(
        OfflineStore(settings.offline),
        Path(spec["labels"]),
        [(registered, name) for name in spec["features"]],
    )
    floor = floor_sql(Path(spec["log_dir"]), Path(spec["labels"]), spec["features"])
    for name, con, query in [("ours", ours.con, ours.sql()), ("floor", duckdb.connect(), floor)]:
        output = literal(Path(spec["output"]).with_suffix(f".{name}.parquet"))
        plan = con.execute(
            f"EXPLAIN ANALYZE COPY ({query}) TO {output} (FORMAT parquet)"
        ).fetchall()
        print(f"== EXPLAIN ANALYZE: {name} ==", file=sys.stderr)
        for row in plan:
            print(row[-1], file=sys.stderr)
    emit({"explained": True})


def run_child(role: str, spec: dict[str, Any], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run `role` in a subprocess of this script (cwd: DuckDB's spill folder); its last line."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    meter = Meter()
    try:
        result = subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, str(Path(__file__).resolve()), "_child", role, handle.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
    finally:
        os.unlink(handle.name)
    if result.returncode != 0:
        raise RuntimeError(f"the {role} subprocess failed ({result.returncode}):\n{result.stderr}")
    if result.stderr.strip():
        print(result.stderr, file=sys.stderr, end="")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    out: dict[str, Any] = json.loads(lines[-1])
    out.update(meter.others())
    return out


# -- Feast ---------------------------------------------------------------------------------------


def run_feast(
    source: Path, labels: Path, rows: int, store: str, work: Path, timeout: float
) -> dict[str, Any]:
    python = feast_python()
    repo = work / f"feast-repo-{store}-{rows}"
    argv = [
        str(python),
        str(HERE / "feast_app.py"),
        "--source",
        str(source),
        "--labels",
        str(labels),
        "--rows",
        str(rows),
        "--store",
        store,
        "--repo",
        str(repo),
        "--output",
        str(work / f"feast-{store}-{rows}.parquet"),
    ]
    meter = Meter()
    result = subprocess.run(  # noqa: S603 - fixed argv
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=work
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"the Feast app failed ({result.returncode}):\n{result.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    out.update(meter.others())
    return out


# -- checks --------------------------------------------------------------------------------------


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def compare_outputs(
    ours: Path, floor: Path, sample: np.ndarray, features: list[str] = FEATURES
) -> dict[str, Any]:
    """Ours and the floor on the sampled rows: the same label columns and the same values."""
    a = pq.read_table(ours).take(pa.array(sample))
    b = pq.read_table(floor).take(pa.array(sample))
    wrong: dict[str, int] = {}
    for name in ["user_id", "event_timestamp", "label", *features]:
        left, right = a.column(name).to_pylist(), b.column(name).to_pylist()
        bad = sum(
            not (x == y or (isinstance(x, float) and close(x, y)))
            for x, y in zip(left, right, strict=True)
        )
        if bad:
            wrong[name] = bad
    return {
        "rows_compared": len(sample),
        "values_compared": len(sample) * len(features),
        "wrong": wrong,
    }


def brute_force(events: Events, users: int, labels: Path, rows: np.ndarray) -> list[dict[str, Any]]:
    """docs/semantics.md literally, with numpy, for the sampled label rows."""
    table = pq.read_table(labels).take(pa.array(rows))
    names = {name: i for i, name in enumerate(user_names(users).to_pylist())}
    by_user = np.argsort(events.user, kind="stable")  # stable: time order within a user
    starts = np.searchsorted(events.user[by_user], np.arange(users + 1))
    out = []
    for user, when in zip(
        table.column("user_id").to_pylist(),
        pc.cast(table.column("event_timestamp"), pa.int64()).to_pylist(),
        strict=True,
    ):
        u = names[user]
        mine = by_user[starts[u] : starts[u + 1]]
        ts, amount = events.ts[mine], events.amount[mine]
        values: dict[str, Any] = {}
        for window, tiles in WINDOWS.items():
            inside = (ts // TILE_US >= when // TILE_US - tiles + 1) & (ts <= when)
            chosen = amount[inside]
            values[f"count_{window}"] = int(inside.sum())
            values[f"amount_sum_{window}"] = float(chosen.sum())
            values[f"amount_max_{window}"] = float(chosen.max()) if len(chosen) else None
            # Times are unique here, so the newest event needs no tie-break.
            values[f"amount_last_{window}"] = (
                float(chosen[np.argmax(ts[inside])]) if len(chosen) else None
            )
        out.append(values)
    return out


def check_brute_force(
    output: Path, events: Events, users: int, labels: Path, rows: np.ndarray
) -> dict[str, int]:
    got = pq.read_table(output).take(pa.array(rows)).to_pylist()
    want = brute_force(events, users, labels, rows)
    wrong = sum(
        not close(g[name], w[name]) for g, w in zip(got, want, strict=True) for name in FEATURES
    )
    return {"values_compared": len(rows) * len(FEATURES), "wrong": wrong}


def compare_feast(ours: Path, feast: Path) -> dict[str, Any]:
    """Feast's TTL window [t - W, t] holds ours, [(floor(t/T) - n + 1)·T, t]; so where ours has
    a value Feast must have the same one, and where only Feast has one, its event lies between
    t - W and our tile-aligned far edge."""
    theirs = pq.read_table(feast)
    rows = np.asarray(theirs.column("row").to_numpy())
    mine = pq.read_table(ours, columns=LATEST).take(pa.array(rows))
    out: dict[str, Any] = {"rows": len(rows)}
    for window in WINDOWS:
        a = mine.column(f"amount_last_{window}").to_pylist()
        b = theirs.column(f"last_{window}__amount").to_pylist()
        out[window] = {
            "equal": sum(close(x, y) for x, y in zip(a, b, strict=True)),
            "only_feast": sum(x is None and y is not None for x, y in zip(a, b, strict=True)),
            "differ": sum(x is not None and not close(x, y) for x, y in zip(a, b, strict=True)),
        }
    return out


# -- the run -------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return round(float(np.median(values)), 2)


class Runs:
    """The measured subprocesses of one benchmark run, and what else the machine did meanwhile."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.registry = RegistrySettings(path=work / "registry")
        self.load: dict[str, list[float | None]] = {}

    def log_root(self, size: int) -> Path:
        return self.work / f"log-{size}"

    def ours(
        self,
        size: int,
        features: list[str],
        labels: Path,
        name: str,
        memory_limit: str | None = None,
    ) -> dict[str, Any]:
        settings = Settings(
            offline=OfflineSettings(root=self.log_root(size), memory_limit=memory_limit),
            registry=self.registry,
        )
        spec = {
            "settings": settings.model_dump(mode="json"),
            "labels": str(labels),
            "features": features,
            "output": str(self.work / f"{name}.parquet"),
        }
        return self._run("ours", spec, name)

    def floor(self, size: int, features: list[str], labels: Path, name: str) -> dict[str, Any]:
        spec = {
            "features": features,
            "log_dir": str(
                OfflineStore(OfflineSettings(root=self.log_root(size))).view_dir(VIEW, 1)
            ),
            "labels": str(labels),
            "output": str(self.work / f"{name}.parquet"),
        }
        return self._run("floor", spec, name)

    def explain(self, size: int, labels: Path) -> None:
        settings = Settings(
            offline=OfflineSettings(root=self.log_root(size)), registry=self.registry
        )
        spec = {
            "settings": settings.model_dump(mode="json"),
            "labels": str(labels),
            "features": FEATURES,
            "log_dir": str(OfflineStore(settings.offline).view_dir(VIEW, 1)),
            "output": str(self.work / "explain.parquet"),
        }
        run_child("explain", spec, self.work, self.args.timeout)

    def _run(self, role: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
        wait_for_quiet(self.args.wait_quiet)
        out = run_child(role, spec, self.work, self.args.timeout)
        self.load.setdefault(name, []).append(out.get("other_processes_cores"))
        log(f"{name}: {out['seconds']:.1f}s, peak RSS {out['rss_mb']:,.0f} MiB")
        return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median time and the highest peak RSS of repeated runs, with every run's figures."""
    return {
        "seconds": median([r["seconds"] for r in runs]),
        "peak_rss_mb": round(max(r["rss_mb"] for r in runs), 1),
        "seconds_runs": [round(r["seconds"], 2) for r in runs],
        "peak_rss_mb_runs": [round(r["rss_mb"], 1) for r in runs],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="fstore-bench-train-", dir=args.tmp))
    try:
        return measure(args, work)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    info = machine(duckdb=duckdb.__version__, pyarrow=pa.__version__)
    log(f"machine: {info}; working in {work}")
    runs = Runs(args, work)
    register_views(runs.registry, make_view())
    labels = work / "labels.parquet"
    write_labels(labels, args.labels, args.users, args.days, args.seed)
    result: dict[str, Any] = {
        "machine": info,
        "events": args.events,
        "users": args.users,
        "labels": args.labels,
        "days": args.days,
        "batch_events": args.batch_events,
        "repeats": args.repeats,
    }

    # The main size first: its events stay in memory for the brute-force check.
    log(f"generating {args.events:,} events for {args.users:,} users over {args.days:g} days")
    began = time.perf_counter()
    events = generate_events(args.events, args.users, args.days, args.partitions, args.seed)
    written = write_log(runs.log_root(args.events), events, args.users, args.batch_events)
    result["generate_seconds"] = round(time.perf_counter() - began, 2)
    result["log_files"], result["log_mb"] = written["files"], round(written["bytes"] / 2**20, 1)
    log(f"log: {written['files']} files, {result['log_mb']} MiB in {result['generate_seconds']}s")
    if args.feast:
        write_feast_source(work / "feast-source.parquet", events, args.users)

    # Ours, the floor and ours with the `last` features only take turns, so that all three
    # see the same conditions; medians are reported, with every run beside them.
    mine, floors, latest, floor_latest = [], [], [], []
    for repeat in range(args.repeats):
        log(f"round {repeat + 1}/{args.repeats} at {args.events:,} events")
        mine.append(runs.ours(args.events, FEATURES, labels, "ours"))
        floors.append(runs.floor(args.events, FEATURES, labels, "floor"))
        latest.append(runs.ours(args.events, LATEST, labels, "latest"))
        floor_latest.append(runs.floor(args.events, LATEST, labels, "floor-latest"))
    ours_figures, floor_figures = summarize(mine), summarize(floors)
    result.update(ours_figures)
    result["cpu_seconds"] = median([r["cpu_seconds"] for r in mine])
    result["sql_floor_seconds"] = floor_figures["seconds"]
    result["sql_floor_peak_rss_mb"] = floor_figures["peak_rss_mb"]
    result["sql_floor_seconds_runs"] = floor_figures["seconds_runs"]
    latest_figures = summarize(latest)
    result["latest_only_seconds"] = latest_figures["seconds"]
    result["latest_only_peak_rss_mb"] = latest_figures["peak_rss_mb"]
    result["latest_only_seconds_runs"] = latest_figures["seconds_runs"]
    # Not a goal: what the floor's formulation takes for the part Feast can do.
    floor_latest_figures = summarize(floor_latest)
    result["sql_floor_latest_only_seconds"] = floor_latest_figures["seconds"]
    result["sql_floor_latest_only_peak_rss_mb"] = floor_latest_figures["peak_rss_mb"]

    # Out of core: the same query with DuckDB held to a fraction of its working set.
    if args.memory_limit:
        log(f"ours with offline.memory_limit = {args.memory_limit}")
        limited = runs.ours(args.events, FEATURES, labels, "limited", args.memory_limit)
        result["limited_memory_limit"] = args.memory_limit
        result["limited_seconds"] = round(limited["seconds"], 2)
        result["limited_peak_rss_mb"] = round(limited["rss_mb"], 1)

    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(args.labels, min(args.check_rows, args.labels), replace=False))
    result["floor_check"] = compare_outputs(work / "ours.parquet", work / "floor.parquet", sample)
    few = sample[: args.brute_rows]
    result["brute_force_check"] = {
        name: check_brute_force(work / f"{name}.parquet", events, args.users, labels, few)
        for name in ("ours", "floor")
    }
    result["floor_latest_check"] = compare_outputs(
        work / "latest.parquet", work / "floor-latest.parquet", sample, LATEST
    )
    if args.memory_limit:
        result["limited_check"] = compare_outputs(
            work / "limited.parquet", work / "ours.parquet", sample
        )
    log(f"checks: vs floor {result['floor_check']}, vs numpy {result['brute_force_check']}")
    del events

    result.update(feast(args, runs, labels, result["latest_only_seconds"]))

    # Scaling: ours (12 features) and the floor on logs of each size, the same label rows.
    by_events = {str(args.events): result["seconds"]}
    floor_by_events = {str(args.events): result["sql_floor_seconds"]}
    runs_by_events = {str(args.events): result["seconds_runs"]}
    for size in args.scaling:
        if size == args.events:
            continue
        log(f"scaling: generating {size:,} events")
        more = generate_events(size, args.users, args.days, args.partitions, args.seed)
        write_log(runs.log_root(size), more, args.users, args.batch_events)
        del more
        mine, floors = [], []
        for _repeat in range(args.repeats):
            mine.append(runs.ours(size, FEATURES, labels, f"ours-{size}"))
            floors.append(runs.floor(size, FEATURES, labels, f"floor-{size}"))
        by_events[str(size)] = summarize(mine)["seconds"]
        runs_by_events[str(size)] = summarize(mine)["seconds_runs"]
        floor_by_events[str(size)] = summarize(floors)["seconds"]
        shutil.rmtree(runs.log_root(size), ignore_errors=True)

    def by_size(figures: dict[str, Any]) -> dict[str, Any]:
        return dict(sorted(figures.items(), key=lambda kv: int(kv[0])))

    result["seconds_by_events"] = by_size(by_events)
    result["seconds_runs_by_events"] = by_size(runs_by_events)
    result["sql_floor_seconds_by_events"] = by_size(floor_by_events)
    result["scaling_exponent"] = exponent(result["seconds_by_events"])
    result["sql_floor_scaling_exponent"] = exponent(result["sql_floor_seconds_by_events"])

    if args.explain:
        log("EXPLAIN ANALYZE of ours and of the floor (not in the figures)")
        runs.explain(args.events, labels)

    result["floor_ratio"] = ratio(result["seconds"], result["sql_floor_seconds"])
    result["feast_ratio"] = ratio(
        result.get("feast_latest_only_seconds"), result.get("latest_only_seconds_at_feast_rows")
    )
    result["load"] = runs.load
    for name, cores in runs.load.items():
        busiest = max((c for c in cores if c is not None), default=0.0)
        if busiest > 0.15:
            log(f"warning: other processes used {busiest} cores during a {name} measurement")
    result["goals_met"] = goals_met(result)
    return result


def exponent(seconds_by_events: dict[str, float]) -> float | None:
    """k in time ~ events^k between the smallest and largest size: 1 linear, 2 quadratic."""
    sizes = sorted((int(n), s) for n, s in seconds_by_events.items())
    if len(sizes) < 2 or sizes[0][1] <= 0:
        return None
    (n0, t0), (n1, t1) = sizes[0], sizes[-1]
    return round(math.log(t1 / t0) / math.log(n1 / n0), 2)


def feast(args: argparse.Namespace, runs: Runs, labels: Path, latest: float) -> dict[str, Any]:
    """Feast on the first `--feast-rows` label rows (and on a tenth of them if that times out).

    When Feast ran on fewer rows than ours, ours runs again on those rows, for the ratio.
    """
    out: dict[str, Any] = {
        "feast_version": FEAST_VERSION if args.feast else None,
        "feast_store": args.feast_store if args.feast else None,
        "feast_latest_only_seconds": None,
    }
    if not args.feast:
        return out
    work = runs.work
    rows = min(args.feast_rows or args.labels, args.labels)
    attempts: list[dict[str, Any]] = []
    while rows >= 1:
        log(f"Feast {FEAST_VERSION} ({args.feast_store} offline store) on {rows:,} label rows")
        wait_for_quiet(args.wait_quiet)
        try:
            got = run_feast(
                work / "feast-source.parquet",
                labels,
                rows,
                args.feast_store,
                work,
                args.feast_timeout,
            )
        except subprocess.TimeoutExpired:
            attempts.append({"rows": rows, "error": f"timed out after {args.feast_timeout:g}s"})
            log(f"Feast timed out after {args.feast_timeout:g}s at {rows:,} rows")
            rows //= 10
            continue
        except (RuntimeError, OSError) as exc:
            log(f"Feast failed: {exc}")
            attempts.append({"rows": rows, "error": str(exc)[-3000:]})
            break
        attempts.append({"rows": rows, **got})
        log(
            f"Feast: {got['seconds']:.1f}s, peak RSS {got['rss_mb']:,.0f} MiB, {got['rows']:,} rows"
        )
        out["feast_rows"] = rows
        out["feast_latest_only_seconds"] = round(got["seconds"], 2)
        out["feast_to_parquet_seconds"] = round(got["write_seconds"], 2)
        out["feast_peak_rss_mb"] = round(got["rss_mb"], 1)
        out["feast_rows_returned"] = got["rows"]
        if rows == args.labels:
            out["latest_only_seconds_at_feast_rows"] = latest
            mine = work / "latest.parquet"
        else:
            subset = work / f"labels-{rows}.parquet"
            pq.write_table(pq.read_table(labels).slice(0, rows), subset)
            again = runs.ours(args.events, LATEST, subset, f"latest-{rows}")
            out["latest_only_seconds_at_feast_rows"] = round(again["seconds"], 2)
            mine = work / f"latest-{rows}.parquet"
        out["feast_check"] = compare_feast(mine, work / f"feast-{args.feast_store}-{rows}.parquet")
        log(f"Feast vs ours: {out['feast_check']}")
        break
    out["feast_attempts"] = attempts
    return out


def goals_met(result: dict[str, Any]) -> dict[str, bool | None]:
    def check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else ok(value)

    return {
        "peak_rss_mb": check(result.get("peak_rss_mb"), lambda v: v < GOALS["peak_rss_mb"]),
        "floor_ratio": check(result.get("floor_ratio"), lambda v: v <= GOALS["floor_ratio"]),
        "feast_ratio": check(result.get("feast_ratio"), lambda v: v >= GOALS["feast_ratio"]),
    }


def print_summary(result: dict[str, Any]) -> None:
    def each(values: list[float] | None) -> str:
        return "runs: " + ", ".join(f"{v:g}" for v in values) if values else ""

    goals = result["goals_met"]
    feast_rows = result.get("feast_rows")
    rows = [
        (
            "ours, 12 features",
            show(result["seconds"], " s"),
            "",
            None,
            each(result["seconds_runs"]),
        ),
        (
            "ours, peak RSS (max)",
            show(result["peak_rss_mb"], " MiB"),
            "< 4,096 MiB",
            goals["peak_rss_mb"],
            each(result["peak_rss_mb_runs"]),
        ),
        (
            "SQL floor",
            show(result["sql_floor_seconds"], " s"),
            "",
            None,
            each(result["sql_floor_seconds_runs"]),
        ),
        ("ours / floor", show(result["floor_ratio"], "x"), "<= 1.5x", goals["floor_ratio"], ""),
        (
            "ours, 3 last only",
            show(result["latest_only_seconds"], " s"),
            "",
            None,
            each(result["latest_only_seconds_runs"]),
        ),
        (
            "Feast, 3 last",
            show(result["feast_latest_only_seconds"], " s"),
            "",
            None,
            f"{feast_rows:,} label rows" if feast_rows else "",
        ),
        ("Feast / ours", show(result["feast_ratio"], "x"), ">= 5x", goals["feast_ratio"], ""),
        (
            "SQL floor, 3 last only",
            show(result["sql_floor_latest_only_seconds"], " s"),
            "",
            None,
            "",
        ),
    ]
    floors = result["sql_floor_seconds_by_events"]
    rows += [
        (f"ours at {int(n):,} events", show(s, " s"), "", None, f"floor {floors[n]:g} s")
        for n, s in result["seconds_by_events"].items()
    ]
    rows.append(("scaling exponent", show(result["scaling_exponent"]), "~1", None, ""))
    for name, value, goal, met, detail in rows:
        verdict = {True: "met", False: "MISSED", None: ""}[met]
        print(f"{name:<24} {value:>14}  {goal:<12} {verdict:<6} {detail}".rstrip())


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def sizes(text: str) -> list[int]:
        return sorted({int(part) for part in text.split(",") if part.strip()})

    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0, help="event time range")
    parser.add_argument("--scaling", type=sizes, default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--batch-events", type=int, default=20_000, help="events per log append (worker batch)"
    )
    parser.add_argument("--feast", dest="feast", action="store_true", default=None)
    parser.add_argument("--no-feast", dest="feast", action="store_false", help="skip Feast")
    parser.add_argument("--feast-store", choices=["duckdb", "file"], default="duckdb")
    parser.add_argument("--feast-rows", type=int, help="label rows for Feast (default: all)")
    parser.add_argument("--feast-timeout", type=float, default=600.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each query (median)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per measured query")
    parser.add_argument("--check-rows", type=int, default=20_000, help="ours vs floor, sampled")
    parser.add_argument("--brute-rows", type=int, default=300, help="vs numpy, sampled")
    parser.add_argument(
        "--memory-limit",
        default="256MB",
        help="also run ours once with this offline.memory_limit ('' to skip)",
    )
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE plans")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.users, args.labels, args.days = 20_000, 200, 2_000, 2.0
        args.scaling = [5_000, 10_000, 20_000]
        args.batch_events = 2_000
        args.check_rows, args.brute_rows, args.repeats = 2_000, 200, 1
    if args.feast is None:
        args.feast = not args.quick  # --quick runs Feast only when asked to (--feast)
    return args


CHILDREN: dict[str, Callable[[dict[str, Any]], None]] = {
    "ours": child_ours,
    "floor": child_floor,
    "explain": child_explain,
}


def main(argv: list[str]) -> None:
    if argv[:1] == ["_child"]:
        with open(argv[2]) as handle:
            CHILDREN[argv[1]](json.load(handle))
        return
    args = parse_args(argv)
    result = run(args)
    print_summary(result)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
