"""Online read cost of window kinds, and of the generalised fold on plain sliding windows against
another checkout of the code (e.g. main before window kinds), in the same run (see
BENCHMARKS.md, "Window kinds: read cost").

One Redis is started here on a free port (Debian's redis-server). Each side runs in a
subprocess of its own (its `PYTHONPATH` picks the code) that writes the ingest workload's
events (bench/ingest_workload.py: count/sum/mean/max over 10m, 1h, 24h in 1-minute tiles) for
`--users` users through `ViewWriter.apply`, then reads one entity per request with
`read_views` (the serving read without HTTP or asyncio); the write's events/s are reported too:
    folded   the first read of each entity in a tile: the fold script merges its tiles
    cached   a second read of the entity in the same tile: the fold cache's GET
Sides:
    plain       the 12 sliding features, this code
    baseline    the same, the code of `--baseline` (only with that flag)
    kinds       the 12 + count and sum over 1h_offset_1h, 1h_every_10m, 1d_tumbling, lifetime
Rounds alternate the sides, so a load change of the shared machine hits all of them.

    python bench/window_reads.py --quick
    python bench/window_reads.py --baseline /work/main --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
START_US = 1_767_225_600_000_000
MINUTE_US = 60_000_000
KINDS = ["1h_offset_1h", "1h_every_10m", "1d_tumbling", "lifetime"]


def side(args: argparse.Namespace) -> dict[str, Any]:
    """One side in this process: write, then time the folded and the cached reads."""
    from ingest_workload import make_view  # noqa: PLC0415 - on the side's own PYTHONPATH

    from featurestore.config import OfflineSettings, RedisSettings
    from featurestore.definitions import Aggregation
    from featurestore.events import EventBatch
    from featurestore.offline.log import OfflineStore
    from featurestore.online import OnlineStore, read_views
    from featurestore.tiles import TileLayout
    from featurestore.writer import ViewWriter

    view = make_view("bench_windows", "unused")
    if args.kinds:
        view = view.model_copy(
            update={
                "aggregations": [
                    *view.aggregations,
                    Aggregation(function="count", windows=KINDS),
                    Aggregation(column="amount", function="sum", windows=KINDS),
                ]
            }
        )
        view = type(view).model_validate(view.model_dump(by_alias=True))
    layout = TileLayout(view)
    namespace = f"bench-windows-{uuid.uuid4().hex[:8]}"
    online = OnlineStore(RedisSettings(url=args.redis, namespace=namespace))
    rng = np.random.default_rng(7)
    n = args.users * args.events_per_user
    ts = START_US + np.sort(rng.integers(0, 2 * 1440 * MINUTE_US, n))
    users = [f"u{u:05d}" for u in rng.integers(0, args.users, n).tolist()]
    with tempfile.TemporaryDirectory() as root:
        writer = ViewWriter(online, OfflineStore(OfflineSettings(root=Path(root))), view, 1)
        writer.load_positions()
        wrote = time.perf_counter()
        for low in range(0, n, 20_000):
            high = min(low + 20_000, n)
            batch = EventBatch(
                {"user_id": users[low:high], "amount": rng.gamma(2.0, 25.0, high - low).tolist()},
                ts[low:high],
                np.zeros(high - low, dtype=np.int64),
                np.arange(low, high, dtype=np.int64),
            )
            writer.apply(batch, batch.last_offsets())
        wrote = time.perf_counter() - wrote
    keys = [f"u{u:05d}" for u in range(args.users)]
    as_of = int(ts[-1])
    for key in keys:  # warm: the connection, the script, this process's code paths
        read_views(online, [(view.name, 1, layout, [key])], as_of)
    times: dict[str, list[float]] = {"folded": [], "cached": []}
    # CPU time, Redis's (INFO cpu) and this process's: less moved by a shared machine's load
    # than the wall clock.
    cpu: dict[str, float] = {"folded": 0.0, "cached": 0.0}
    redis_cpu: dict[str, float] = {"folded": 0.0, "cached": 0.0}
    for _tile in range(args.tiles):
        as_of += MINUTE_US  # a new tile: every entity's first read folds
        for kind in ("folded", "cached"):
            redis_began, cpu_began = _redis_cpu(online), time.process_time()
            began = time.perf_counter()
            for key in keys:
                read_views(online, [(view.name, 1, layout, [key])], as_of)
            times[kind].append(time.perf_counter() - began)
            cpu[kind] += time.process_time() - cpu_began
            redis_cpu[kind] += _redis_cpu(online) - redis_began
    for key in online.client.scan_iter(match=f"{namespace}:*", count=1000):
        online.client.delete(key)
    online.close()
    reads = len(keys) * args.tiles
    return {
        "features": len(layout.features),
        "write_events_per_s": n / wrote,
        **{f"{kind}_reads_per_s": reads / sum(t) for kind, t in times.items()},
        **{f"{kind}_us_per_read": sum(t) / reads * 1e6 for kind, t in times.items()},
        **{f"{kind}_redis_cpu_us_per_read": c / reads * 1e6 for kind, c in redis_cpu.items()},
        **{f"{kind}_client_cpu_us_per_read": c / reads * 1e6 for kind, c in cpu.items()},
    }


def _redis_cpu(online: Any) -> float:
    info = online.client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tests run this)")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--tiles", type=int, default=5, help="tiles read per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare plain with")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one side
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--kinds", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.users, args.events_per_user, args.tiles, args.rounds = 50, 5, 2, 1
    if args.side:
        sys.path.insert(0, str(HERE))
        print(json.dumps(side(args)))
        return

    from featurestore.config import ServicesSettings  # noqa: PLC0415
    from featurestore.services import RedisServer, free_port  # noqa: PLC0415

    here = str(HERE.parent)
    sides = {"plain": (here, False), "kinds": (here, True)}
    if args.baseline is not None:
        sides["baseline"] = (str(args.baseline.resolve()), False)
    with tempfile.TemporaryDirectory() as state:
        services = ServicesSettings(state_dir=Path(state), redis_port=free_port())
        server = RedisServer(services)
        server.start()
        try:
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
            for _round in range(args.rounds):
                for name, (code, kinds) in sides.items():
                    command = [
                        sys.executable,
                        __file__,
                        "--side",
                        name,
                        "--redis",
                        server.url,
                        "--users",
                        str(args.users),
                        "--events-per-user",
                        str(args.events_per_user),
                        "--tiles",
                        str(args.tiles),
                    ] + (["--kinds"] if kinds else [])
                    env = {**os.environ, "PYTHONPATH": code}
                    done = subprocess.run(  # noqa: S603 - our own script
                        command, env=env, capture_output=True, text=True, check=True
                    )
                    results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            server.stop()
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        summary[name] = {
            "features": runs[0]["features"],
            **{
                key: round(float(np.median([r[key] for r in runs])), 1)
                for key in runs[0]
                if key != "features"
            },
            "rounds": len(runs),
            "folded_reads_per_s_by_round": [round(r["folded_reads_per_s"]) for r in runs],
        }
    if "baseline" in summary:
        for kind in ("folded", "cached"):
            summary[f"plain_vs_baseline_{kind}"] = round(
                summary["plain"][f"{kind}_reads_per_s"]
                / summary["baseline"][f"{kind}_reads_per_s"],
                3,
            )
            summary[f"plain_vs_baseline_{kind}_redis_cpu"] = round(
                summary["plain"][f"{kind}_redis_cpu_us_per_read"]
                / summary["baseline"][f"{kind}_redis_cpu_us_per_read"],
                3,
            )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
