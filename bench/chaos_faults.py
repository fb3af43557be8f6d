"""The faults the chaos benchmark injects, for real, and the processes it injects them into.

- `Breakable`: the run's own Kafka broker and redis-server (never borrowed ones: they are
  restarted, wiped and stopped). Redis is configured as `fstore services` starts it, with the
  append-only file: restarted with it, it keeps its data; wiped, its files are deleted while it
  is down, so it comes back empty as one without persistence would. A stall is SIGSTOP.
- `Supervised`: `fstore ingest` (or `fstore serve`) as a subprocess, SIGKILLed by us or found
  exited on its own (a crash, counted), and started again either way.
- `Load`: `/v1/predict` requests at a fixed rate from hey processes, each request's send time
  kept, so that the ones sent during a Redis stall can be told apart.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _loadgen import hey_argv, percentile, run_hey
from _report import log
from _services import Services
from _subprocesses import Child

from featurestore.services import KafkaServer, RedisServer

__all__ = ["Breakable", "Load", "Supervised", "summarize_load"]


class Breakable:
    """The broker and the Redis a run started, with the faults it injects into them."""

    def __init__(self, services: Services) -> None:
        [self.kafka] = [s for s in services.started if isinstance(s, KafkaServer)]
        [self.redis] = [s for s in services.started if isinstance(s, RedisServer)]
        self.redis_restarts = self.redis_wipes = self.kafka_restarts = self.redis_stalls = 0
        self.stalls: list[tuple[float, float]] = []  # perf_counter spans Redis was stopped

    def restart_redis(self, wipe: bool) -> float:
        """Stop Redis (SIGTERM: the AOF is flushed) and start it again; with `wipe`, its files
        are deleted in between. Seconds it was down."""
        began = time.perf_counter()
        self.redis.stop()
        if wipe:
            shutil.rmtree(self.redis.home / "appendonlydir", ignore_errors=True)
            (self.redis.home / "dump.rdb").unlink(missing_ok=True)
            self.redis_wipes += 1
        self.redis.start()
        self.redis_restarts += 1
        return time.perf_counter() - began

    def restart_kafka(self) -> float:
        """Stop the broker (SIGTERM) and start it again on its data. Seconds it was down."""
        began = time.perf_counter()
        self.kafka.stop()
        self.kafka.start(timeout=300)
        self.kafka_restarts += 1
        return time.perf_counter() - began

    def stall_redis(self, seconds: float) -> None:
        """SIGSTOP redis-server for `seconds`, then SIGCONT: a hung server, connections open."""
        pid = self.redis.process.pid()
        if pid is None:
            raise RuntimeError("redis-server is not running")
        os.kill(pid, signal.SIGSTOP)
        stopped = time.perf_counter()
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        self.stalls.append((stopped, time.perf_counter()))
        self.redis_stalls += 1


@dataclass
class Supervised:
    """A command of ours in a subprocess, restarted whenever it is gone: `kill()` is ours,
    an exit found by `check()` is a crash (its log's tail kept)."""

    name: str
    argv: list[str]
    work: Path
    env: dict[str, str]
    ready: Callable[[], bool] | None = None
    kills: int = 0
    crashes: int = 0
    crash_logs: list[str] = field(default_factory=list)
    child: Child | None = None
    lives: int = 0
    stopped: bool = False

    def start(self) -> None:
        log_file = self.work / f"{self.name.replace(' ', '-')}-{self.lives}.log"
        self.child = Child(self.name, self.argv, log_file, env=self.env, cwd=self.work)
        self.lives += 1
        if self.ready is not None:
            self.child.wait_until(self.ready, 120)

    def check(self) -> None:
        """Start it again if it exited on its own (a crash)."""
        assert self.child is not None
        code = self.child.process.poll()
        if code is None or self.stopped:
            return
        self.crashes += 1
        tail = self.child.log_file.read_text(errors="replace")[-3000:]
        self.crash_logs.append(tail)
        log(f"{self.name} exited by itself ({code}); its log's tail:\n{tail}")
        self.start()

    def kill(self) -> None:
        """SIGKILL (its whole process group), then start a new one."""
        self.check()
        assert self.child is not None
        os.killpg(self.child.pid, signal.SIGKILL)
        self.child.process.wait(30)
        self.kills += 1
        self.start()

    def stop(self) -> int | None:
        """SIGTERM and wait: its exit code (None when it had exited already: a crash)."""
        if self.child is None or self.stopped:
            return None
        if self.child.process.poll() is not None:
            self.check()
            return None
        self.stopped = True
        self.child.stop()
        return self.child.process.returncode

    def logs(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.work.glob(f"{self.name.replace(' ', '-')}-*.log"))
        )


class Load(threading.Thread):
    """`rate` req/s of one POST body for `seconds`, from `processes` hey processes of `workers`
    workers each (started staggered, so their lockstep ticks interleave); each request's send
    time (perf_counter), latency (s) and status in `rows`. Enough workers that a stalled
    request does not slow the rate: each waits up to `processes * workers / rate` s."""

    def __init__(
        self,
        url: str,
        body: bytes,
        rate: float,
        seconds: float,
        processes: int,
        workers: int,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name=f"load {rate:g}/s", daemon=True)
        each = max(1, round(rate * seconds / processes / workers)) * workers
        per_worker = rate / processes / workers
        argv = [*hey_argv(body, timeout), "-c", str(workers), "-q", f"{per_worker:g}"]
        self.runs = [[*argv, "-n", str(each)]] * processes
        self.url, self.requests = url, each * processes
        self.stagger = 1 / per_worker / processes
        self.budget = seconds + timeout + 120
        self.rows: list[tuple[float, float, str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        began = time.perf_counter()
        try:
            rows = run_hey(self.url, self.runs, self.stagger, self.budget)
        except BaseException as exc:  # noqa: BLE001 - re-raised by `result`
            self.error = exc
            return
        self.rows = [(began + sent, latency, status) for sent, latency, status in rows]

    def result(self) -> tuple[int, list[tuple[float, float, str]]]:
        self.join(self.budget + 30)
        if self.error is not None:
            raise self.error
        return self.requests, self.rows


def summarize_load(
    loads: list[tuple[int, list[tuple[float, float, str]]]],
    stalls: list[tuple[float, float]],
    after_s: float = 5.0,
) -> dict[str, Any]:
    """Counts by status, 5xx other than 503, requests without an answer, and for the requests
    sent while Redis was stopped, the latency of their 503s; and the share of 200s among the
    requests sent in the `after_s` s after each stall ended, from 1 s after it (time to reach
    the first request of a connection that stalled)."""
    requests = sum(n for n, _ in loads)
    rows = [row for _, rs in loads for row in rs]
    statuses: dict[str, int] = {}
    for _sent, _latency, status in rows:
        statuses[status] = statuses.get(status, 0) + 1

    def during(sent: float) -> bool:
        return any(lo <= sent <= hi for lo, hi in stalls)

    def after(sent: float) -> bool:
        return any(hi + 1.0 <= sent <= hi + 1.0 + after_s for _lo, hi in stalls)

    stalled_503 = sorted(latency * 1000 for sent, latency, s in rows if s == "503" and during(sent))
    stalled_other = [s for sent, _l, s in rows if during(sent) and s != "503"]
    later = [s for sent, _l, s in rows if after(sent)]
    p99 = percentile(stalled_503, 99)
    p50 = percentile(stalled_503, 50)
    return {
        "requests": requests,
        "responses": len(rows),
        "no_response": requests - len(rows),
        "statuses": statuses,
        "responses_5xx": sum(n for s, n in statuses.items() if s.startswith("5") and s != "503"),
        "responses_503": statuses.get("503", 0),
        "responses_during_redis_stall": len(stalled_503) + len(stalled_other),
        "responses_503_during_redis_stall": len(stalled_503),
        "p50_ms_503_during_redis_stall": None if p50 is None else round(p50, 1),
        "p99_ms_503_during_redis_stall": None if p99 is None else round(p99, 1),
        "max_ms_503_during_redis_stall": round(stalled_503[-1], 1) if stalled_503 else None,
        "responses_after_redis_stall": len(later),
        "responses_200_after_redis_stall": sum(1 for s in later if s == "200"),
    }
