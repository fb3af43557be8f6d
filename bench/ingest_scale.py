"""`bench/ingest.py --redis-cluster N`: one and two workers on one Redis and on a local Redis
Cluster of N masters, in the same run, and the cost model that projects scale past this machine.

Each configuration consumes the whole topic with a consumer group of its own: one worker, or two
workers in one group (each takes half the partitions). Figures per configuration:
    events/s   all events over the time from the first worker's first batch to the last
               worker's last one (clocks: CLOCK_MONOTONIC, shared by the processes);
    worker µs  the workers' own CPU per event (process time, summed over the workers);
    Redis µs   Redis's CPU per event (INFO cpu, summed over the cluster's nodes).
Redis CPU per event is what decides how far the online store scales: N masters carry about N
times the events when the cluster's cost per event stays near one Redis's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from _report import log
from ingest_processes import run_child

from featurestore.config import RedisSettings, Settings
from featurestore.services.redis_cluster import RedisCluster, free_ports

__all__ = ["ScaleTarget", "measure_scale", "print_scale_summary", "start_cluster"]

# The seconds a worker of two waits without a message before it says it is done: the group's
# events are split by partition, so neither knows its share in advance.
IDLE_STOP_S = 3.0


class ScaleTarget:
    """One online store to measure: its settings and the URLs of its nodes (for INFO cpu)."""

    def __init__(self, name: str, redis: RedisSettings, nodes: list[str]) -> None:
        self.name = name
        self.redis = redis
        self.nodes = nodes

    def cpu_seconds(self) -> float:
        total = 0.0
        for url in self.nodes:
            info = redis.Redis.from_url(url).info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total


def start_cluster(state_dir: Path, masters: int) -> RedisCluster:
    cluster = RedisCluster(state_dir, free_ports(masters), masters=masters)
    log(f"starting a Redis Cluster of {masters} masters at {cluster.url}")
    cluster.start()
    return cluster


def measure_scale(
    targets: list[ScaleTarget],
    settings_for: Callable[[str, RedisSettings], Settings],
    spec: dict[str, Any],
    repeats: int,
    check: Callable[[Settings], int],
    timeout: float,
) -> dict[str, Any]:
    """Every target with one and with two workers, `repeats` times in turn; medians."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(repeats):
        for target in targets:
            for workers in (1, 2):
                label = f"{target.name}_{workers}w"
                settings = settings_for(f"{label}{repeat}", target.redis)
                figures = _run(target, settings, spec, workers, f"{label}-{repeat}", timeout)
                figures["values_wrong"] = check(settings)
                runs.setdefault(label, []).append(figures)
                log(
                    f"{label} {repeat + 1}/{repeats}: {figures['events_per_s']:,} events/s, "
                    f"worker {figures['worker_cpu_us_per_event']} µs, "
                    f"Redis {figures['redis_cpu_us_per_event']} µs per event"
                )
    result: dict[str, Any] = {"scale_runs": runs}
    for label, entries in runs.items():
        result[label] = {
            key: round(statistics.median(e[key] for e in entries), 2)
            for key in ("events_per_s", "worker_cpu_us_per_event", "redis_cpu_us_per_event")
        }
        result[label]["values_wrong"] = sum(e["values_wrong"] for e in entries)
    single, cluster = targets[0].name, targets[-1].name
    for workers in (1, 2):
        mine, base = result[f"{cluster}_{workers}w"], result[f"{single}_{workers}w"]
        result[f"cluster_redis_cpu_ratio_{workers}w"] = round(
            mine["redis_cpu_us_per_event"] / base["redis_cpu_us_per_event"], 2
        )
    return result


def _run(
    target: ScaleTarget,
    settings: Settings,
    spec: dict[str, Any],
    workers: int,
    group: str,
    timeout: float,
) -> dict[str, Any]:
    child = {
        **spec,
        "settings": settings.model_dump(mode="json"),
        "group": f"bench-scale-{group}",
        "idle_stop_s": IDLE_STOP_S if workers > 1 else 0,
    }
    redis0 = target.cpu_seconds()
    with ThreadPoolExecutor(workers) as pool:
        runs = pool.map(lambda _: run_child("worker", child, timeout), range(workers))
        outs = [lines[-1] for lines in runs]
    # The idle wait of a worker of two is after its last batch: not in its time, but in Redis's
    # CPU only as idle.
    redis_cpu = target.cpu_seconds() - redis0
    events = sum(o["events"] for o in outs)
    busy = [o for o in outs if o["first_at"] is not None]  # a worker may have had no partition
    seconds = max(o["last_at"] for o in busy) - min(o["first_at"] for o in busy)
    time.sleep(0.5)
    return {
        "workers": workers,
        "events": events,
        "events_per_worker": [o["events"] for o in outs],
        "events_per_s": round(events / seconds),
        "worker_cpu_us_per_event": round(sum(o["cpu_seconds"] for o in outs) / events * 1e6, 2),
        "redis_cpu_us_per_event": round(redis_cpu / events * 1e6, 2),
    }


def print_scale_summary(result: dict[str, Any]) -> None:
    print(f"{'configuration':<14} {'events/s':>10} {'worker µs':>10} {'Redis µs':>9}  wrong")
    for label in ("single_1w", "single_2w", "cluster_1w", "cluster_2w"):
        r = result[label]
        print(
            f"{label:<14} {r['events_per_s']:>10,.0f} {r['worker_cpu_us_per_event']:>10} "
            f"{r['redis_cpu_us_per_event']:>9}  {r['values_wrong']}"
        )
    for workers in (1, 2):
        ratio = result[f"cluster_redis_cpu_ratio_{workers}w"]
        verdict = "met" if ratio <= 1.3 else "MISSED"
        print(f"cluster / one Redis, Redis CPU per event, {workers} worker(s): {ratio}x  {verdict}")
