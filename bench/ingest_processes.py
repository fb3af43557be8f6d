"""The measured subprocesses of the ingest benchmark: the worker and the floor consumer.

Each runs in a process of its own, so that its peak RSS and CPU are its own, and reports on
stdout as JSON lines: `python bench/ingest_processes.py worker|floor SPEC.json`.
"""

from __future__ import annotations

import cProfile
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import orjson
from _machine import peak_rss_mb
from _report import emit
from _subprocesses import role_argv, role_main, run_role
from confluent_kafka import Consumer, Message

import streaming.ingest.worker as worker_module
from featurestore.config import KafkaSettings, Settings
from featurestore.registry import Registry
from streaming.ingest.worker import Worker

SCRIPT = Path(__file__).resolve()


_F = TypeVar("_F", bound=Callable[..., Any])
PHASES: dict[str, float] = {"decode": 0.0, "redis_merge": 0.0, "parquet_append": 0.0}


def timed(phase: str, function: _F) -> _F:
    """`function`, adding its wall time to PHASES[phase]: a breakdown without a profiler."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            PHASES[phase] += time.perf_counter() - began

    return wrapper  # type: ignore[return-value]


class TimedWorker(Worker):
    """The product's worker, plus a clock from the first batch, phase times, RSS at marks."""

    def __init__(self, *args: Any, marks: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Wrapped from outside, so the worker's own code runs unchanged.
        online, offline = self.online, self.offline
        online.merge_shards = timed("redis_merge", online.merge_shards)  # type: ignore[method-assign]
        offline.append = timed("parquet_append", offline.append)  # type: ignore[method-assign]
        self.marks = sorted(marks)
        self.first: float | None = None
        self.last = 0.0
        self.cpu_first = 0.0
        self.cpu_last = 0.0

    def process(self, messages: list[Message]) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()
        super().process(messages)
        self.last = time.perf_counter()
        self.cpu_last = time.process_time()
        while self.marks and self.counters.applied >= self.marks[0]:
            mark = self.marks.pop(0)
            emit({"mark": mark, "seconds": self.last - self.first, "rss_mb": peak_rss_mb()})


FIRST_BATCH_WAIT_S = 20.0


def child_worker(spec: dict[str, Any]) -> None:
    # This subprocess exists only to be measured: wrap the module-level decode the worker calls.
    worker_module.decode = timed("decode", worker_module.decode)  # type: ignore[attr-defined]
    settings = Settings(**spec["settings"])
    registered = Registry(settings.registry).get_view(spec["view"])
    target = int(spec["events"])
    options = {"poll_timeout": spec["poll_timeout"]} if spec.get("poll_timeout") else {}
    worker = TimedWorker(
        settings,
        [(registered.view, registered.version)],
        group=spec["group"],
        batch_size=spec["batch_size"],
        marks=spec.get("marks", []),
        **options,
    )
    profile = cProfile.Profile() if spec.get("profile") else None
    started = time.perf_counter()

    # A worker of several in a group does not know its share: it stops after `idle_stop_s`
    # without a message once it has had some, or after `FIRST_BATCH_WAIT_S` without any (a
    # group's first assignment waits for its members: the broker's initial rebalance delay).
    idle_stop_s = float(spec.get("idle_stop_s") or 0)

    def done(w: Worker) -> bool:
        if target > 0 and w.counters.consumed >= target:
            return True
        if worker.first is None:
            waited, limit = time.perf_counter() - started, max(idle_stop_s, FIRST_BATCH_WAIT_S)
        else:
            waited, limit = time.perf_counter() - worker.last, idle_stop_s
        return idle_stop_s > 0 and waited > limit

    if profile is not None:
        profile.enable()
    worker.run(until=done)
    if profile is not None:
        profile.disable()
        profile.dump_stats(spec["profile"])
    counters = worker.counters
    first = worker.first if worker.first is not None else started
    emit(
        {
            "events": counters.applied,
            "seconds": worker.last - first,
            # time.perf_counter: CLOCK_MONOTONIC, shared by processes; None without a batch
            "first_at": worker.first,
            "last_at": worker.last if worker.first is not None else None,
            "cpu_seconds": worker.cpu_last - worker.cpu_first,
            "batch_seconds": counters.batch_seconds,
            "phase_seconds": PHASES,
            "batches": counters.batches,
            "late": counters.late,
            "dead_lettered": counters.dead_lettered,
            "rss_mb": peak_rss_mb(),
        }
    )


def child_floor(spec: dict[str, Any]) -> None:
    """Consume and decode the JSON of every message, configured as the worker's consumer is."""
    kafka = KafkaSettings(**spec["kafka"])
    consumer = Consumer(
        kafka.client_config(
            **{
                "group.id": spec["group"],
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
            }
        )
    )
    consumer.subscribe([spec["topic"]])
    target, seen, first, last = int(spec["events"]), 0, 0.0, 0.0
    cpu_first = 0.0
    try:
        while seen < target:
            messages = consumer.consume(num_messages=spec["batch_size"], timeout=0.2)
            if not messages:
                continue
            if not first:
                first, cpu_first = time.perf_counter(), time.process_time()
            for message in messages:
                if message.error() is None:
                    orjson.loads(message.value() or b"null")
                    seen += 1
            last = time.perf_counter()
    finally:
        consumer.close()
    emit(
        {
            "events": seen,
            "seconds": last - first,
            "cpu_seconds": time.process_time() - cpu_first,
            "rss_mb": peak_rss_mb(),
        }
    )


def run_child(role: str, spec: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """Run `role` in a subprocess of this script; its stdout lines, parsed."""
    return run_role(SCRIPT, role, spec, timeout)


def child_argv(role: str, spec_path: str) -> list[str]:
    return role_argv(SCRIPT, role, Path(spec_path))


CHILDREN: dict[str, Callable[[dict[str, Any]], None]] = {
    "worker": child_worker,
    "floor": child_floor,
}


if __name__ == "__main__":
    role_main(CHILDREN, sys.argv[1:])
