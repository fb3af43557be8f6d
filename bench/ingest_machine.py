"""The machine under the ingest benchmark: Kafka and Redis, and who used the CPU meanwhile."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import libversion
from confluent_kafka import version as kafka_client_version

from featurestore.config import KafkaSettings, ServicesSettings
from featurestore.services import KafkaServer, RedisServer, free_port


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Services:
    kafka: KafkaSettings
    redis_url: str
    kafka_version: str
    started: list[KafkaServer | RedisServer]


def start_services(state_dir: Path, properties: dict[str, str]) -> Services:
    config = ServicesSettings(
        state_dir=state_dir,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        redis_port=free_port(),
    )
    started: list[KafkaServer | RedisServer] = []
    bootstrap = os.environ.get("FSTORE_KAFKA_BOOTSTRAP")
    url = os.environ.get("FSTORE_REDIS_URL")
    version = "external"
    try:
        if not bootstrap:
            kafka = KafkaServer(config)
            log(f"starting Kafka {kafka.version} on {kafka.bootstrap}")
            started.append(kafka)
            kafka.start()
            bootstrap, version = kafka.bootstrap, kafka.version
        if not url:
            server = RedisServer(config)
            log(f"starting Redis on {server.url}")
            started.append(server)
            server.start()
            url = server.url
    except BaseException:
        for one in started:
            one.stop()
        raise
    return Services(
        KafkaSettings(bootstrap=bootstrap, properties=properties), url, version, started
    )


def server_cpu(services: Services) -> dict[str, float | None]:
    """CPU seconds used so far by Redis (its INFO) and by a broker this run started (psutil)."""
    info = redis.Redis.from_url(services.redis_url).info("cpu")
    out: dict[str, float | None] = {
        "redis": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "kafka": None,
    }
    for server in services.started:
        pid = server.process.pid() if isinstance(server, KafkaServer) else None
        if pid is None:
            continue
        try:
            # The bench extra; optional, so that `--quick` runs with the dev tools alone.
            import psutil  # type: ignore[import-untyped]
        except ImportError:
            continue
        times = psutil.Process(pid).cpu_times()
        out["kafka"] = times.user + times.system
    return out


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores of the machine have been busy so far (/proc/stat), or None."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float, quiet_for: float = 5.0, threshold: float = 0.2) -> None:
    """Wait (at most `limit` s) until the machine has used under `threshold` cores for
    `quiet_for` s: on a shared machine, start a measurement between other people's jobs."""
    if limit <= 0 or machine_busy_seconds() is None:
        return
    deadline, quiet, step = time.monotonic() + limit, 0.0, 1.0
    while quiet < quiet_for:
        if time.monotonic() > deadline:
            log(f"the machine was not quiet within {limit:g}s; measuring anyway")
            return
        before = machine_busy_seconds() or 0.0
        time.sleep(step)
        cores = ((machine_busy_seconds() or 0.0) - before) / step
        quiet = quiet + step if cores < threshold else 0.0


class Meter:
    """CPU used during one measurement: by the machine, by our processes, by everyone else.

    Ours are this script, its (reaped) subprocesses, Redis and a broker this run started. The
    rest ("others") is what other work on the machine took meanwhile: on a shared 2-core box a
    figure measured while others used a core is not this code's figure.
    """

    def __init__(self, services: Services, wait_quiet: float = 0.0) -> None:
        wait_for_quiet(wait_quiet)
        self.services = services
        self.wall = time.perf_counter()
        self.busy = machine_busy_seconds()
        self.servers = server_cpu(services)
        self.me = time.process_time()
        self.children = self._children()

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        busy = machine_busy_seconds()
        servers = server_cpu(self.services)
        ours = (time.process_time() - self.me) + (self._children() - self.children)
        out: dict[str, Any] = {"seconds": round(wall, 2), "bench_cpu_seconds": round(ours, 2)}
        for name, before in self.servers.items():
            after = servers[name]
            used = None if before is None or after is None else after - before
            out[f"{name}_cpu_seconds"] = None if used is None else round(used, 2)
            ours += used or 0.0
        if busy is not None and self.busy is not None:
            others = max(0.0, busy - self.busy - ours)
            out["machine_cpu_seconds"] = round(busy - self.busy, 2)
            out["other_processes_cores"] = round(others / wall, 2)
        return out


def machine(services: Services) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    redis_info = redis.Redis.from_url(services.redis_url).info("server")
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory_gb, 1),
        "python": platform.python_version(),
        "kafka": services.kafka_version,
        "redis": redis_info.get("redis_version"),
        "confluent_kafka": kafka_client_version(),
        "librdkafka": libversion()[0],
    }
