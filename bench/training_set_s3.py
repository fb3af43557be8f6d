"""The training-set query with the offline log on a real S3 server vs on local disk (`--s3`).

The main size's events are written a second time, in the same worker-sized batches, to an
`s3://` root on SeaweedFS (Apache-2.0) that the run starts on loopback with its data under the
working folder (the `weed` binary is built from the Go module proxy once, then cached: see
featurestore/services/seaweedfs.py), or on the server that `FSTORE_BENCH_S3_ENDPOINT`,
`FSTORE_BENCH_S3_ACCESS_KEY` and `FSTORE_BENCH_S3_SECRET_KEY` name. Then ours runs on the
local log and on the S3 log in turns, so both see the same conditions; the two outputs must be
equal value by value.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from _report import log, ratio
from training_set_checks import compare_outputs
from training_set_processes import Runs
from training_set_workload import FEATURES, Events, write_log

from featurestore.config import OfflineSettings, ServicesSettings
from featurestore.offline.storage import s3_filesystem
from featurestore.services import S3Server, free_port

__all__ = ["measure_s3"]

BUCKET = "fstore-bench"


@contextmanager
def s3_root(work: Path) -> Iterator[tuple[OfflineSettings, str]]:
    """Offline settings of a fresh `s3://` root, and which server holds it."""
    if endpoint := os.environ.get("FSTORE_BENCH_S3_ENDPOINT"):
        config = OfflineSettings(
            root=f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}",
            s3_endpoint=endpoint,
            s3_access_key=os.environ.get("FSTORE_BENCH_S3_ACCESS_KEY"),
            s3_secret_key=os.environ.get("FSTORE_BENCH_S3_SECRET_KEY"),
        )
        _create_bucket(config)
        yield config, f"S3 at {endpoint}"
        return
    services = ServicesSettings(state_dir=work / "services", s3_port=free_port())
    server = S3Server(services)
    if not server.binary.exists():
        log("building SeaweedFS from the Go module proxy (once; minutes)")
    server.start()
    try:
        config = server.offline_settings(f"s3://{BUCKET}/log")
        _create_bucket(config)
        yield config, f"SeaweedFS {server.version} on {server.endpoint}"
    finally:
        server.stop()


def _create_bucket(config: OfflineSettings) -> None:
    fs = s3_filesystem(config, create_buckets=True)
    if fs.get_file_info(BUCKET).type == pafs.FileType.NotFound:
        fs.create_dir(BUCKET)


def measure_s3(
    args: argparse.Namespace, runs: Runs, labels: Path, events: Events, work: Path
) -> dict[str, Any]:
    """Ours with the log on S3 and on local disk, `args.repeats` times each, taking turns."""
    with s3_root(work) as (config, server):
        log(f"writing the log to {config.root} ({server})")
        written = write_log(config, events, args.users, args.batch_events)
        log(f"S3 log: {written['files']} objects in {written['seconds']}s")
        on_s3, local = [], []
        for repeat in range(args.repeats):
            log(f"S3 round {repeat + 1}/{args.repeats}")
            local.append(runs.ours(args.events, FEATURES, labels, "s3-local"))
            on_s3.append(runs.ours(args.events, FEATURES, labels, "s3", offline=config))
    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(args.labels, min(args.check_rows, args.labels), replace=False))
    s3_seconds = _median([r["seconds"] for r in on_s3])
    local_seconds = _median([r["seconds"] for r in local])
    return {
        "s3_server": server,
        "s3_log_objects": written["files"],
        "s3_write_seconds": written["seconds"],
        "s3_seconds": s3_seconds,
        "s3_seconds_runs": [round(r["seconds"], 2) for r in on_s3],
        "s3_peak_rss_mb": round(max(r["rss_mb"] for r in on_s3), 1),
        "s3_local_seconds": local_seconds,
        "s3_local_seconds_runs": [round(r["seconds"], 2) for r in local],
        "s3_ratio": ratio(s3_seconds, local_seconds),
        "s3_check": compare_outputs(work / "s3.parquet", work / "s3-local.parquet", sample),
    }


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 2)
