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
    python bench/training_set.py --s3       # also the log on SeaweedFS vs local, same run
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from _cli import add_common_arguments, working_folder
from _machine import machine
from _report import log, ratio, show
from _services import register_views
from _subprocesses import role_main
from training_set_checks import check_brute_force, compare_outputs
from training_set_feast import feast
from training_set_processes import CHILDREN, Runs
from training_set_s3 import measure_s3
from training_set_workload import (
    FEATURES,
    LATEST,
    generate_events,
    make_view,
    write_feast_source,
    write_labels,
    write_log,
)

# Beside this script: the workload (training_set_workload.py), the floor's statement
# (training_set_floor.py), the measured subprocesses (training_set_processes.py), Feast
# (training_set_feast.py, running bench/feast_app.py in its own virtualenv) and the value checks
# (training_set_checks.py).
GOALS = {"peak_rss_mb": 4096, "floor_ratio": 1.5, "feast_ratio": 5.0}


# -- measurement ---------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return round(float(np.median(values)), 2)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median time and the highest peak RSS of repeated runs, with every run's figures."""
    return {
        "seconds": median([r["seconds"] for r in runs]),
        "peak_rss_mb": round(max(r["rss_mb"] for r in runs), 1),
        "seconds_runs": [round(r["seconds"], 2) for r in runs],
        "peak_rss_mb_runs": [round(r["rss_mb"], 1) for r in runs],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with working_folder("fstore-bench-train-", args.tmp, args.keep) as work:
        return measure(args, work)


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
    if args.s3:
        result.update(measure_s3(args, runs, labels, events, work))
        log(f"S3: {result['s3_seconds']} s vs local {result['s3_local_seconds']} s")
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


# -- report --------------------------------------------------------------------------------------


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
    if "s3_seconds" in result:
        rows += [
            (
                "ours, log on S3",
                show(result["s3_seconds"], " s"),
                "",
                None,
                each(result["s3_seconds_runs"]),
            ),
            (
                "ours, log local (same)",
                show(result["s3_local_seconds"], " s"),
                "",
                None,
                each(result["s3_local_seconds_runs"]),
            ),
            ("S3 / local", show(result["s3_ratio"], "x"), "", None, result["s3_server"]),
        ]
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
    parser.add_argument(
        "--s3",
        action="store_true",
        help="also time ours with the log on an S3 server (SeaweedFS) vs local, same run",
    )
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


def main(argv: list[str]) -> None:
    if argv[:1] and argv[0] in CHILDREN:  # a measured subprocess (training_set_processes.py)
        role_main(CHILDREN, argv)
        return
    args = parse_args(argv)
    result = run(args)
    print_summary(result)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
