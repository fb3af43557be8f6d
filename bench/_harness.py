"""What the benchmark scripts share: progress lines, the machine, the CPU that other work took
during a measurement, peers' virtualenvs, local Kafka and Redis, and measured subprocesses.

Every script measures on a shared machine; a figure is only worth what the machine did
meanwhile, so each measurement is wrapped in a `Meter` and its `other_processes_cores` printed
beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess  # noqa: S404 - benchmarks start servers, peers and measured children
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore.config import KafkaSettings, RegistrySettings, ServicesSettings

if TYPE_CHECKING:
    from featurestore.definitions import FeatureView
    from featurestore.services import KafkaServer, RedisServer

# Kafka and Redis clients are imported in the functions that use them: measured subprocesses
# import this module too, and their peak RSS should hold what they measure, not librdkafka.

__all__ = [
    "Child",
    "Meter",
    "Services",
    "add_common_arguments",
    "cleanup_services",
    "FEAST_VERSION",
    "hey",
    "hey_binary",
    "percentile",
    "emit",
    "feast_python",
    "log",
    "machine",
    "machine_busy_seconds",
    "peak_rss_mb",
    "peer_python",
    "ratio",
    "register_views",
    "server_cpu",
    "services_versions",
    "show",
    "start_services",
    "tree_cpu_seconds",
    "wait_for_quiet",
]

# -- output --------------------------------------------------------------------------------------


def log(text: str) -> None:
    """Progress goes to stderr: stdout's last line is the figures' JSON."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout: how a measured subprocess reports to its parent."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def show(value: Any, unit: str = "") -> str:
    """A figure for the summary table: thousands separated, "n/a" when there is none."""
    if value is None:
        return "n/a"
    return f"{value:,}{unit}" if isinstance(value, int | float) else str(value)


def add_common_arguments(parser: argparse.ArgumentParser, files: bool = True) -> None:
    """--wait-quiet and --seed, and with `files` --tmp and --keep."""
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measurement wait up to this long for the machine to be idle",
    )
    if files:
        parser.add_argument("--tmp", type=Path, help="where the run's files go (default: TMPDIR)")
        parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--seed", type=int, default=42)


def register_views(config: RegistrySettings, *views: FeatureView) -> None:
    """Apply the views (with their entities and sources) to the feature registry at `config`."""
    from featurestore.registry import Registry
    from featurestore.repo import RepoContents

    Registry(config).apply(
        RepoContents(
            entities={e.name: e for v in views for e in v.entities},
            sources={v.source.name: v.source for v in views},
            views={v.name: v for v in views},
        )
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


# -- the machine ---------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def machine(**extra: Any) -> dict[str, Any]:
    """Cores, CPU model, memory and Python, then `extra` (library and server versions)."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory_gb, 1),
        "python": platform.python_version(),
        **extra,
    }


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores of the machine have been busy so far (/proc/stat), or None."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used so far by a running process and its descendants (/proc), or None:
    the live ones' own time, and the time of those they have reaped (a gunicorn that recycles
    its workers reaps each one it replaces).

    For servers that are our children but not yet reaped (so not in RUSAGE_CHILDREN), and for
    ones that fork workers (gunicorn).
    """
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name is in parentheses and may hold spaces: split after its last ')'.
        fields = text[text.rfind(")") + 2 :].split()
        # utime + stime, and cutime + cstime: the time of its children it has reaped.
        used = sum(int(value) for value in fields[11:15])
        stats[int(entry.name)] = (int(fields[1]), used / tick)
    if pid not in stats:
        return None
    total, frontier = 0.0, [pid]
    while frontier:
        current = frontier.pop()
        total += stats[current][1]
        frontier += [p for p, (parent, _) in stats.items() if parent == current]
    return total


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

    Ours are this script, its reaped subprocesses and the servers `servers()` reports (CPU
    seconds so far, by name; None where unknown). The rest ("others") is what other work on the
    machine took meanwhile: on a shared 2-core box a figure measured while others used a core is
    not this code's figure.
    """

    def __init__(
        self,
        servers: Callable[[], dict[str, float | None]] | None = None,
        wait_quiet: float = 0.0,
    ) -> None:
        wait_for_quiet(wait_quiet)
        self.servers = servers or dict
        self.wall = time.perf_counter()
        self.busy = machine_busy_seconds()
        self.before = self.servers()
        self.mine = self._mine()

    @staticmethod
    def _mine() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        busy = machine_busy_seconds()
        after = self.servers()
        ours = self._mine() - self.mine
        out: dict[str, Any] = {"seconds": round(wall, 2), "bench_cpu_seconds": round(ours, 2)}
        for name, before in self.before.items():
            now = after.get(name)
            used = None if before is None or now is None else now - before
            out[f"{name}_cpu_seconds"] = None if used is None else round(used, 2)
            ours += used or 0.0
        if busy is not None and self.busy is not None:
            others = max(0.0, busy - self.busy - ours)
            out["machine_cpu_seconds"] = round(busy - self.busy, 2)
            out["other_processes_cores"] = round(others / wall, 2)
        return out

    def others(self) -> dict[str, Any]:
        """Stop, keeping only `other_processes_cores` (nothing where /proc/stat is missing)."""
        figures = self.stop()
        return {k: v for k, v in figures.items() if k == "other_processes_cores"}


# -- peers in virtualenvs of their own -----------------------------------------------------------


def peer_python(venv_name: str, requirement: str, imports: str, version: str) -> Path:
    """The interpreter of a peer's own virtualenv under ~/.cache/fstore/bench, made on first use
    and then reused while `import <imports>` works and the first of them is at `version`.

    Peers pin their own pandas, pyarrow, numpy or confluent-kafka ranges; keeping each apart
    leaves ours alone. A venv that lacks something is completed in place, not remade: another
    benchmark may be running the peer from it at this moment.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fstore" / "bench"
    venv = cache / venv_name
    python = venv / "bin" / "python"
    first = imports.split(",")[0].strip()
    check = [str(python), "-c", f"import {imports}; print({first}.__version__)"]
    steps = [[str(python), "-m", "pip", "install", "--quiet", requirement]]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True, check=False)  # noqa: S603
        if found.stdout.strip() == version:
            return python
        log(f"installing {requirement} into {venv}")
    else:
        log(f"creating {venv} with {requirement} (once; reused on later runs)")
        cache.mkdir(parents=True, exist_ok=True)
        steps.insert(0, [sys.executable, "-m", "venv", "--clear", str(venv)])
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` failed:\n{result.stdout}{result.stderr}")
    return python


FEAST_VERSION = "0.67.0"


def feast_python() -> Path:
    """Feast's interpreter (training sets with DuckDB, serving from Redis), in its own venv."""
    return peer_python(
        "feast-venv",
        f"feast[duckdb,redis]=={FEAST_VERSION}",
        "feast, duckdb, ibis, redis",
        FEAST_VERSION,
    )


# -- Kafka and Redis -----------------------------------------------------------------------------


@dataclass
class Services:
    kafka: KafkaSettings
    redis_url: str
    kafka_version: str
    started: list[KafkaServer | RedisServer]


def start_services(state_dir: Path, properties: dict[str, str] | None = None) -> Services:
    """Kafka and Redis on free ports in `state_dir`, unless FSTORE_KAFKA_BOOTSTRAP /
    FSTORE_REDIS_URL name running ones (which are then borrowed, never stopped)."""
    from featurestore.services import KafkaServer, RedisServer, free_port

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
        KafkaSettings(bootstrap=bootstrap, properties=properties or {}), url, version, started
    )


def server_cpu(services: Services) -> dict[str, float | None]:
    """CPU seconds used so far by Redis (its INFO) and by a broker this run started."""
    import redis

    from featurestore.services import KafkaServer

    info = redis.Redis.from_url(services.redis_url).info("cpu")
    out: dict[str, float | None] = {
        "redis": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "kafka": None,
    }
    for server in services.started:
        pid = server.process.pid() if isinstance(server, KafkaServer) else None
        if pid is not None:
            out["kafka"] = tree_cpu_seconds(pid)
    return out


def services_versions(services: Services) -> dict[str, Any]:
    import redis
    from confluent_kafka import libversion
    from confluent_kafka import version as kafka_client_version

    redis_info = redis.Redis.from_url(services.redis_url).info("server")
    return {
        "kafka": services.kafka_version,
        "redis": redis_info.get("redis_version"),
        "confluent_kafka": kafka_client_version(),
        "librdkafka": libversion()[0],
    }


def cleanup_services(services: Services, topics: list[str], namespaces: list[str]) -> None:
    """Stop the servers this run started; on borrowed ones, delete what the run made (topics
    with their dead-letter topics, and the keys under each Redis namespace)."""
    import redis
    from confluent_kafka.admin import AdminClient

    from featurestore.services import KafkaServer, RedisServer

    borrowed = {type(server) for server in services.started}
    if KafkaServer not in borrowed and topics:
        admin = AdminClient(services.kafka.client_config())
        names = topics + [f"{t}.dlq" for t in topics]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception as exc:  # noqa: BLE001 - best effort: a dlq topic may not exist
                log(f"could not delete a topic: {exc}")
    if RedisServer not in borrowed:
        client = redis.Redis.from_url(services.redis_url)
        for namespace in namespaces:
            keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
            for i in range(0, len(keys), 10_000):
                client.delete(*keys[i : i + 10_000])
    for server in services.started:
        server.stop()


# -- servers under test --------------------------------------------------------------------------


class Child:
    """A server under test in a subprocess (and a session) of its own, its output in a log file.

    Stopped by its process group, so that workers it forked stop with it.
    """

    def __init__(self, name: str, argv: list[str], log_file: Path, **popen: Any) -> None:
        self.name, self.log_file = name, log_file
        with log_file.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - argv built by the benchmark
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds(self.pid)

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll `ready()` until true; a clear error with the log's tail if the child dies or
        `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited with {self.process.returncode}"
                    if self.process.returncode is not None
                    else f"not ready after {timeout:g}s"
                )
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} {state}; its log ({self.log_file}):\n{tail}")
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


# -- HTTP load -----------------------------------------------------------------------------------


def hey_binary() -> str:
    """`hey` (Debian package `hey`), installed with apt-get when missing and running as root."""
    found = shutil.which("hey")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing the load generator: apt-get install -y hey")
        install = ["apt-get", "install", "-y", "hey"]
        # A fresh machine may have no package lists yet: update once, then try again.
        for argv in (install, ["apt-get", "update"], install):
            result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
            if argv is install and result.returncode == 0:
                break
        found = shutil.which("hey")
        if found:
            return found
    raise RuntimeError(
        "the load generator `hey` is not installed: install the Debian package `hey` "
        "(`sudo apt-get install -y hey`) and run the benchmark again"
    )


def percentile(ordered: list[float], pct: float) -> float | None:
    """The nearest-rank percentile of sorted values: one that was measured, not interpolated."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def hey(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    requests: int | None = None,
    seconds: float | None = None,
    rate: float | None = None,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """POST `body` to `url` with `hey`: `requests` in all (or for `seconds`) from `concurrency`
    workers, as fast as they go or, with `rate`, at `rate` req/s in all. Per-request figures
    come from hey's CSV.

    At a fixed rate each worker is a hey process of its own (`-c 1 -q rate/concurrency`),
    started 1/rate s after the one before: hey's workers in one process tick in lockstep, so
    `-c 8 -q 25` would send bursts of 8 every 40 ms, not one request every 5 ms. hey's CSV
    lists answered requests only; with `requests` given, those that got no answer (refused,
    timed out) are `requests - responses`; with `seconds` they are unknown (None).
    """
    argv = [hey_binary(), "-m", "POST", "-T", "application/json", "-t", f"{timeout:g}"]
    argv += ["-o", "csv", "-d", body.decode()]
    if requests is not None and requests % concurrency:
        raise ValueError(f"{requests} requests do not split evenly over {concurrency} workers")
    each = None if requests is None or not rate else requests // concurrency
    if rate:
        count = ["-n", str(each)] if each is not None else ["-z", f"{seconds:g}s"]
        runs = [[*argv, "-c", "1", "-q", f"{rate / concurrency:g}", *count]] * concurrency
    else:
        count = ["-n", str(requests)] if requests is not None else ["-z", f"{seconds:g}s"]
        runs = [[*argv, "-c", str(concurrency), *count]]
        each = requests
    budget = (seconds or 0) + (each or 0) / max(1.0, (rate or 1.0) / concurrency) + 120
    began = time.perf_counter()
    started: list[tuple[float, subprocess.Popen[str]]] = []
    for i, run in enumerate(runs):
        if rate:
            time.sleep(max(0.0, began + i / rate - time.perf_counter()))
        started.append(
            (
                time.perf_counter() - began,
                subprocess.Popen(  # noqa: S603 - argv built here
                    [*run, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                ),
            )
        )
    latencies: list[float] = []
    ends: list[float] = []
    statuses: dict[str, int] = {}
    for offset, process in started:
        out, err = process.communicate(timeout=budget)
        if process.returncode != 0:
            raise RuntimeError(f"hey failed ({process.returncode}): {err[-2000:]}")
        for line in out.splitlines()[1:]:
            fields = line.split(",")  # response-time,...,status-code,offset (seconds)
            if len(fields) < 8:
                continue
            latency = float(fields[0])
            latencies.append(round(latency * 1000, 1))  # hey prints 0.1 ms steps
            ends.append(offset + float(fields[7]) + latency)
            statuses[fields[6]] = statuses.get(fields[6], 0) + 1
    latencies.sort()
    span = max(ends, default=0.0)
    answered = len(latencies)
    return {
        "requests": requests,
        "responses": answered,
        "non_200": answered - statuses.get("200", 0),
        "no_response": None if requests is None else requests - answered,
        "statuses": statuses,
        "seconds": round(span, 3),
        "rps": round(answered / span, 1) if span else None,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "concurrency": concurrency,
        "rate": rate,
    }
