"""The registries on SQLite vs PostgreSQL, in the same run: per-call latency of what servers
read (the model registry's generation, the feature views, a model version) and of what the CLI
writes (an apply, a promotion), and promotions by several writers at once (threads, each with
connections of its own, queueing on the write lock).

PostgreSQL: `--postgres-url` (or FSTORE_BENCH_POSTGRES_URL), else Debian's server started in the
working folder (`fstore services up --postgres`'s code). Stdout's last line is the figures' JSON.

    python bench/registry.py            # ~1 minute
    python bench/registry.py --quick    # a few seconds: the bench test's smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _cli import add_common_arguments, working_folder
from _machine import Meter, machine
from _report import log

from featurestore.config import ModelsSettings, RegistrySettings, ServicesSettings
from featurestore.definitions import Entity
from featurestore.models import ModelRegistry
from featurestore.models.versions import DatasetRef, FeatureSpec, Objective, Signature
from featurestore.registry import Registry
from featurestore.repo import RepoContents
from featurestore.services import PostgresServer, free_port

# A LightGBM text model is only checked for its first word here: the registry stores text.
_MODEL = "tree\nversion=v4\n"


def timed(call: Callable[[], object], n: int) -> dict[str, float]:
    """Median and p99 of `n` calls, in milliseconds."""
    call()  # the first call opens what later ones reuse
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3),
    }


def register(models: ModelRegistry, name: str) -> int:
    return models.register(
        name,
        _MODEL,
        objective=Objective.BINARY,
        signature=Signature((FeatureSpec("user_txn@1:f", "user_txn__f"),), ("user_id",)),
        label="y",
        dataset=DatasetRef("d", 1, "ab" * 32),
        views={"user_txn": 1},
        params={},
        metrics={"auc": 0.8},
        primary_metric="auc",
        profile={},
        who="bench",
    ).version


def measure(url: str | None, folder: Path, n: int, threads: int) -> dict[str, Any]:
    registry = Registry(RegistrySettings(path=folder / "registry", url=url))
    models = ModelRegistry(ModelsSettings(path=folder / "models", url=url))
    registry.apply(RepoContents(entities={"user": Entity(name="user", join_keys=["id"])}))
    first, second = register(models, "m"), register(models, "m")
    counter = iter(range(10**9))

    def apply_changed() -> None:
        entity = Entity(name="user", join_keys=["id"], description=str(next(counter)))
        registry.apply(RepoContents(entities={"user": entity}))

    def promote() -> None:
        version = first if next(counter) % 2 else second
        models.set_alias("m", "production", version, who="bench", force=True, reason="bench")

    meter = Meter()
    figures: dict[str, Any] = {
        "generation": timed(models.generation, n),
        "list_views": timed(registry.list_views, n),
        "get_model": timed(lambda: models.get("m", 1), n),
        "apply": timed(apply_changed, max(n // 5, 5)),
        "promote": timed(promote, max(n // 5, 5)),
    }
    # Writers at once: each waits for the write lock; the figure is writes per second in all.
    per_thread = max(n // 10, 3)
    barrier = threading.Barrier(threads)

    def writer() -> None:
        barrier.wait()
        for _ in range(per_thread):
            promote()

    pool = [threading.Thread(target=writer) for _ in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    figures["concurrent_promotions_per_s"] = round(
        threads * per_thread / (time.perf_counter() - start), 1
    )
    moves = [e for e in models.history("m") if e.action == "alias"]
    figures["audit_chain_intact"] = all(
        b.from_version == a.to_version for a, b in zip(moves, moves[1:], strict=False)
    )
    figures["meter"] = meter.stop()
    return figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = 30 if args.quick else args.calls
    with working_folder("fstore-bench-registry-", args.tmp, args.keep) as work:
        url = args.postgres_url or os.environ.get("FSTORE_BENCH_POSTGRES_URL")
        server = None
        if url is None:
            # Reachable by the unprivileged user PostgreSQL runs as under root.
            work.chmod(0o755)
            server = PostgresServer(
                ServicesSettings(state_dir=work / "services", postgres_port=free_port())
            )
            log("starting PostgreSQL")
            server.start()
            url = server.url
        try:
            log("SQLite")
            sqlite = measure(None, work / "sqlite", n, args.threads)
            log("PostgreSQL")
            postgres = measure(url, work / "postgres", n, args.threads)
        finally:
            if server is not None:
                server.stop()
    return {"machine": machine(), "calls": n, "sqlite": sqlite, "postgresql": postgres}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--calls", type=int, default=500, help="calls per read figure")
    parser.add_argument("--threads", type=int, default=4, help="writers at once")
    parser.add_argument("--postgres-url", help="a PostgreSQL database to use (it gets tables)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    result = run(parse_args(argv))
    for backend in ("sqlite", "postgresql"):
        row = result[backend]
        log(
            f"{backend:10s} generation {row['generation']['median_ms']} ms, list_views "
            f"{row['list_views']['median_ms']} ms, apply {row['apply']['median_ms']} ms, promote "
            f"{row['promote']['median_ms']} ms, {row['concurrent_promotions_per_s']} promotions/s "
            f"from {result['calls']} calls"
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
