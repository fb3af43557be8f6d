"""The training-set benchmark's peer: Feast's point-in-time join of the latest `amount`.

Feast runs in its own virtualenv (`_peers.feast_python`), as bench/feast_app.py, on the first
`--feast-rows` label rows; only the 3 `last` features are something Feast can compute at all.
"""

from __future__ import annotations

import argparse
import subprocess  # noqa: S404 - for TimeoutExpired: Feast runs as a subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from _machine import Meter, wait_for_quiet
from _peers import FEAST_VERSION, feast_python
from _report import log
from _subprocesses import run_json
from training_set_checks import compare_feast
from training_set_processes import Runs
from training_set_workload import LATEST

__all__ = ["feast", "run_feast"]

HERE = Path(__file__).resolve().parent


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
    out = run_json("the Feast app", argv, timeout, cwd=work)[-1]
    out.update(meter.others())
    return out


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
