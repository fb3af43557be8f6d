"""Freshness: produce at a steady rate while a worker runs; time produce -> readable."""

from __future__ import annotations

import os
import signal
import subprocess  # noqa: S404 - the worker under test runs as a subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer
from ingest_processes import child_argv
from ingest_workload import producer, send

from featurestore.config import Settings
from featurestore.store import FeatureStore


@dataclass
class Probe:
    user: str
    produced: float  # time.time() just before produce()
    visible: float | None = None


@dataclass
class Freshness:
    probes: list[Probe] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    produced: int = 0
    reads: int = 0


def measure_freshness(
    settings: Settings,
    topic: str,
    view: str,
    rate: int,
    seconds: float,
    probe_every: int,
    poll_timeout: float | None,
) -> dict[str, Any]:
    """Produce at `rate` events/s while a worker runs; time probes until a read shows them.

    A probe is an ordinary event of a user seen nowhere else, so it is visible exactly when that
    user's `count_10m` is 1. Reads go through `FeatureStore.get_online_features`, the library
    entry point (registry lookup, one Redis round trip, window merge).
    """
    spec = {
        "settings": settings.model_dump(mode="json"),
        "view": view,
        "group": f"bench-fresh-{uuid.uuid4().hex[:8]}",
        "batch_size": 20_000,
        "events": 0,  # until SIGTERM
        "poll_timeout": poll_timeout,
    }
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as handle:
        handle.write(orjson.dumps(spec))
    errors = Path(handle.name).with_suffix(".log")
    with errors.open("wb") as sink:
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            child_argv("worker", handle.name),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    store = FeatureStore(settings)
    ref = f"{view}:count_10m"
    state = Freshness()
    try:
        # Warm up: wait until the worker has its partitions and a first probe shows.
        out = producer(settings.kafka, **{"linger.ms": 5})
        warm = Probe(f"warm-{uuid.uuid4().hex[:8]}", time.time())
        _send(out, topic, warm.user, warm.produced)
        out.flush(10)
        deadline = time.monotonic() + 60
        while not _visible(store, ref, [warm.user])[0]:
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the freshness worker never caught up:\n{errors.read_text()[-3000:]}"
                )
            time.sleep(0.05)
        stop = threading.Event()
        sender = threading.Thread(
            target=_paced_producer,
            args=(out, topic, rate, seconds, probe_every, state, stop),
            daemon=True,
        )
        cpu_began, began = time.process_time(), time.perf_counter()
        sender.start()
        _poll_probes(store, ref, state, sender)
        stop.set()
        sender.join(10)
        # Producer thread and poller together: what the measuring took from the machine.
        bench_cpu_share = (time.process_time() - cpu_began) / (time.perf_counter() - began)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        os.unlink(handle.name)
        errors.unlink(missing_ok=True)
    latencies = np.array([(p.visible - p.produced) * 1000 for p in state.probes if p.visible])
    missing = sum(1 for p in state.probes if p.visible is None)
    return {
        "freshness_p50_ms": round(float(np.percentile(latencies, 50)), 1)
        if len(latencies)
        else None,
        "freshness_p99_ms": round(float(np.percentile(latencies, 99)), 1)
        if len(latencies)
        else None,
        "freshness_max_ms": round(float(latencies.max()), 1) if len(latencies) else None,
        "freshness_probes": len(state.probes),
        "freshness_probes_never_visible": missing,
        "freshness_events_produced": state.produced,
        "freshness_rate": rate,
        "freshness_reads": state.reads,
        "freshness_bench_cpu_share": round(bench_cpu_share, 2),
    }


def _send(out: Producer, topic: str, user: str, when: float) -> None:
    stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    value = f'{{"user_id":"{user}","amount":1.00,"ts":"{stamp}"}}'
    send(out, topic, value.encode(), wait=0.01, key=user.encode())


def _paced_producer(
    out: Producer,
    topic: str,
    rate: int,
    seconds: float,
    probe_every: int,
    state: Freshness,
    stop: threading.Event,
) -> None:
    """`rate` events/s in 10 ms ticks over 10,000 ordinary users; every `probe_every`th a probe."""
    tick, began, n = 0.01, time.perf_counter(), 0
    per_tick = max(1, round(rate * tick))
    rng = np.random.default_rng(7)
    while not stop.is_set() and time.perf_counter() - began < seconds:
        for _ in range(per_tick):
            n += 1
            now = time.time()
            if n % probe_every == 0:
                probe = Probe(f"probe-{n}", now)
                _send(out, topic, probe.user, now)
                with state.lock:
                    state.probes.append(probe)
            else:
                _send(out, topic, f"u{int(rng.integers(10_000)):05d}", now)
        out.poll(0)
        state.produced = n
        delay = began + (n / per_tick) * tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    out.flush(30)


POLL_GAP_S = 0.005


def _poll_probes(store: FeatureStore, ref: str, state: Freshness, sender: threading.Thread) -> None:
    """Read the waiting probes in one call, again and again, until all show (or 10 s pass).

    A read costs about 0.3 ms of CPU per entity; the gap between reads keeps this poller from
    taking a core away from the worker, Kafka and Redis on a small machine. A probe's latency is
    thus overstated by up to one gap plus one read.
    """
    give_up = None
    while True:
        with state.lock:
            waiting = [p for p in state.probes if p.visible is None]
        if not sender.is_alive():
            give_up = give_up or time.monotonic() + 10
            if not waiting or time.monotonic() > give_up:
                return
        if waiting:
            shown = _visible(store, ref, [p.user for p in waiting])
            now = time.time()
            for probe, ok in zip(waiting, shown, strict=True):
                if ok:
                    probe.visible = now
            state.reads += 1
        time.sleep(POLL_GAP_S)


def _visible(store: FeatureStore, ref: str, users: list[str]) -> list[bool]:
    column = store.get_online_features(entities={"user_id": users}, features=[ref]).features[ref]
    return [value is not None and value >= 1 for value in column.values]
