"""Redis Cluster vs one Redis, same run: the cost per event of the online store's write path and
the latency of its reads (see BENCHMARKS.md, "Redis Cluster").

Both servers are started here on free ports (Debian's redis-server: one server, and a cluster
of `--masters` masters without replicas), so the two sides differ only in the store. Three
write configurations get the same batches of the ingest workload (bench/ingest_workload.py:
count/sum/mean/max over 10m, 1h, 24h in 1-minute tiles):
    single    one Redis, S = 1 (the default)
    single16  one Redis, S = 16: what sharding alone costs
    cluster   the cluster, S = 16 (its default)
through `ViewWriter.apply` — the writer every ingest path calls, without Kafka (the consumer's
cost is the same on both sides). Figures: events/s, the writer's own CPU µs per event
(process time) and Redis CPU µs per event (INFO cpu, summed over the nodes). The offline log
is written to a temporary folder on both sides.

Reads: `read_views_async` of one entity per request (the serving path, without HTTP), p50/p99
at a fixed rate and the saturated rate with 32 requests in flight.

    python bench/redis_cluster.py --quick     # tiny sizes, well under a minute
    python bench/redis_cluster.py             # the figures of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis
from ingest_workload import make_view

from featurestore.config import OfflineSettings, RedisSettings, ServicesSettings
from featurestore.events import EventBatch
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_views_async
from featurestore.services import RedisServer, free_port
from featurestore.services.redis_cluster import RedisCluster, free_ports
from featurestore.tiles import TileLayout
from featurestore.writer import ViewWriter

START_US = 1_767_225_600_000_000
DAY_US = 86_400_000_000


def batches(events: int, users: int, batch: int, partitions: int, seed: int) -> list[EventBatch]:
    rng = np.random.default_rng(seed)
    index = np.arange(events, dtype=np.int64)
    ts = START_US + index * DAY_US // max(events, 1) + rng.integers(0, 2_000_000, events)
    user = rng.integers(0, users, events)
    amount = np.round(rng.gamma(2.0, 25.0, events), 2)
    partition = index % partitions
    offset = index // partitions
    out = []
    for low in range(0, events, batch):
        high = min(low + batch, events)
        out.append(
            EventBatch(
                {
                    "user_id": [f"u{u:05d}" for u in user[low:high].tolist()],
                    "amount": amount[low:high].tolist(),
                },
                ts[low:high],
                partition[low:high],
                offset[low:high],
            )
        )
    return out


def redis_cpu(urls: list[str]) -> float:
    total = 0.0
    for url in urls:
        info = redis.Redis.from_url(url).info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def write(settings: RedisSettings, nodes: list[str], work: list[EventBatch]) -> dict[str, Any]:
    view = make_view("bench_cluster", "unused")
    online = OnlineStore(settings)
    with tempfile.TemporaryDirectory() as root:
        writer = ViewWriter(online, OfflineStore(OfflineSettings(root=Path(root))), view, 1)
        writer.load_positions()
        cpu0, redis0, wall0 = time.process_time(), redis_cpu(nodes), time.perf_counter()
        for batch in work:
            writer.apply(batch, batch.last_offsets())
        wall = time.perf_counter() - wall0
        cpu, rcpu = time.process_time() - cpu0, redis_cpu(nodes) - redis0
    online.close()
    events = sum(len(b) for b in work)
    return {
        "events_per_s": events / wall,
        "writer_cpu_us_per_event": cpu / events * 1e6,
        "redis_cpu_us_per_event": rcpu / events * 1e6,
        "shards": settings.shard_count,
    }


async def reads(settings: RedisSettings, users: int, rate: float, seconds: float) -> dict[str, Any]:
    view = make_view("bench_cluster", "unused")
    layout = TileLayout(view)
    online = OnlineStore(settings)
    as_of = START_US + DAY_US
    rng = np.random.default_rng(1)

    async def one() -> float:
        entity = f"u{int(rng.integers(0, users)):05d}"
        began = time.perf_counter()
        await read_views_async(online, [(view.name, 1, layout, [entity])], as_of)
        return time.perf_counter() - began

    for _ in range(200):  # warm: connections, scripts, the fold caches
        await one()
    paced: list[float] = []
    tasks = []
    began = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one()))
    paced = list(await asyncio.gather(*tasks))
    done = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await one()
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(32)))
    saturated = done / (time.perf_counter() - began)
    online.close()
    ms = np.array(paced) * 1000
    return {
        "rate": rate,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "saturated_reads_per_s": saturated,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.users, args.batch, args.seconds = 20_000, 1_000, 5_000, 1.0
    work = batches(args.events, args.users, args.batch, 6, 42)
    state = Path(tempfile.mkdtemp(prefix="fstore-bench-cluster-"))
    single = RedisServer(ServicesSettings(state_dir=state / "single", redis_port=free_port()))
    cluster = RedisCluster(state / "cluster", free_ports(args.masters), args.masters, 0)
    single.start()
    cluster.start()
    results: dict[str, Any] = {"events": args.events, "masters": args.masters}
    try:
        ns = uuid.uuid4().hex[:8]
        sides = {
            "single": (
                RedisSettings(url=single.url, namespace=f"b{ns}a", cluster=False),
                [single.url],
            ),
            "single16": (
                RedisSettings(url=single.url, namespace=f"b{ns}b", cluster=False, shards=16),
                [single.url],
            ),
            "cluster": (
                RedisSettings(url=cluster.url, namespace=f"b{ns}c", cluster=True),
                [n.url for n in cluster.nodes],
            ),
        }
        # A warm-up (imports, first compilations, scripts) that no side is charged for.
        warm = RedisSettings(url=single.url, namespace=f"b{ns}w", cluster=False)
        write(warm, [single.url], work[:2])
        for name, (settings, nodes) in sides.items():
            print(f"write: {name} ...", file=sys.stderr)
            results[f"write_{name}"] = write(settings, nodes, work)
        for name in ("single", "cluster"):
            print(f"reads: {name} ...", file=sys.stderr)
            settings = sides[name][0]
            results[f"read_{name}"] = asyncio.run(
                reads(settings, args.users, args.rate, args.seconds)
            )
        w, r = results, results
        results["redis_cpu_ratio"] = (
            w["write_cluster"]["redis_cpu_us_per_event"]
            / w["write_single"]["redis_cpu_us_per_event"]
        )
        results["p99_ratio"] = r["read_cluster"]["p99_ms"] / r["read_single"]["p99_ms"]
    finally:
        cluster.stop()
        single.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
