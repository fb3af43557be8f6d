"""The measured subprocesses of the training-set benchmark: ours, the floor, and EXPLAIN.

Each measurement runs in a process of its own, so that its peak RSS (VmHWM) is the query's
alone, and reports its figures as one JSON line on stdout. The children are started as roles of
the run script, `python bench/training_set.py ours|floor|explain SPEC.json`, so that a child
loads what the script loads, as when the figures in BENCHMARKS.md were taken (a child that
loaded only this module would start ~15 MiB lighter and shift every peak RSS by that much).
`Runs` is the parent's side: it starts them one at a time and keeps what else the machine did
meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from _machine import Meter, peak_rss_mb, wait_for_quiet
from _report import emit, log
from _subprocesses import run_role
from training_set_floor import floor_sql, literal
from training_set_workload import FEATURES, VIEW

from featurestore.config import OfflineSettings, RegistrySettings, Settings
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.registry import Registry
from featurestore.store import FeatureStore

__all__ = ["CHILDREN", "Runs", "run_child"]

SCRIPT = Path(__file__).resolve().with_name("training_set.py")

# -- the children --------------------------------------------------------------------------------


def measured(query: Callable[[], object]) -> None:
    """Run `query`; report its wall and CPU seconds and this process's peak RSS to the parent."""
    began, cpu = time.perf_counter(), time.process_time()
    query()
    emit(
        {
            "seconds": time.perf_counter() - began,
            "cpu_seconds": time.process_time() - cpu,
            "rss_mb": peak_rss_mb(),
        }
    )


def child_ours(spec: dict[str, Any]) -> None:
    """The product's entry point, as a user calls it: labels from Parquet, result to Parquet."""
    store = FeatureStore(Settings(**spec["settings"]))
    measured(
        lambda: store.get_historical_features(
            Path(spec["labels"]),
            features=[f"{VIEW}:{name}" for name in spec["features"]],
            output=spec["output"],
        )
    )


def child_floor(spec: dict[str, Any]) -> None:
    con = duckdb.connect()
    query = floor_sql(Path(spec["log_dir"]), Path(spec["labels"]), spec["features"])
    measured(lambda: con.execute(f"COPY ({query}) TO {literal(spec['output'])} (FORMAT parquet)"))


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


CHILDREN: dict[str, Callable[[dict[str, Any]], None]] = {
    "ours": child_ours,
    "floor": child_floor,
    "explain": child_explain,
}


# -- the parent ----------------------------------------------------------------------------------


def run_child(role: str, spec: dict[str, Any], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run `role` in a subprocess of the run script (cwd: DuckDB's spill folder); its last line,
    with what other processes took of the machine meanwhile. Its stderr (EXPLAIN plans) is
    passed on."""
    meter = Meter()
    out = run_role(SCRIPT, role, spec, timeout, cwd=cwd, relay_stderr=True)[-1]
    out.update(meter.others())
    return out


def revealed(settings: Settings) -> dict[str, Any]:
    """The settings as JSON for a child, with the S3 credentials that JSON dumps hide."""
    dumped = settings.model_dump(mode="json")
    for name in ("s3_access_key", "s3_secret_key"):
        value = getattr(settings.offline, name)
        if value is not None:
            dumped["offline"][name] = value.get_secret_value()
    return dumped


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
        offline: OfflineSettings | None = None,
    ) -> dict[str, Any]:
        """Ours on the log of `size` events, or on the log of `offline` (an S3 root) when given."""
        settings = Settings(
            offline=offline or OfflineSettings(root=self.log_root(size), memory_limit=memory_limit),
            registry=self.registry,
        )
        spec = {
            "settings": revealed(settings),
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
