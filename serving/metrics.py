"""Prometheus metrics of one app instance, in a registry of its own (several apps in one process,
as in tests, must not collide in the global one).

`fstore serve --workers N` runs N processes behind one port; a scrape or a dashboard poll reaches
one of them at random, yet must see the host. So the serve command points prometheus-client's
multiprocess mode at a folder of its own (`PROMETHEUS_MULTIPROC_DIR`, emptied at start): every
worker writes its values there, and whatever reads the metrics (`/metrics`, the dashboard) reads
`ServingMetrics.host()`, which sums counters and histograms over the host's workers, live or
exited; gauges are per live worker, summed (requests in flight) or the highest (models loaded).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.metrics_core import Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MULTIPROCESS_ENV",
    "Children",
    "Collects",
    "HostMetric",
    "LatencyMiddleware",
    "ServingMetrics",
    "multiprocess_dir",
    "prepare_multiprocess_dir",
    "remove_multiprocess_dir",
]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for the folder


def multiprocess_dir() -> Path | None:
    """The folder the host's workers share their metrics in, or None (one process)."""
    value = os.environ.get(MULTIPROCESS_ENV, "").strip()
    return Path(value) if value else None


def prepare_multiprocess_dir() -> tuple[Path, bool]:
    """Before the workers start: the folder from `PROMETHEUS_MULTIPROC_DIR`, emptied (values
    of an earlier run would count again), or a new temporary one, set in the environment that
    the workers inherit. Returns the folder and whether it was made here (to remove after)."""
    given = multiprocess_dir()
    if given is None:
        folder = Path(tempfile.mkdtemp(prefix="fstore-metrics-"))
        os.environ[MULTIPROCESS_ENV] = str(folder)
        return folder, True
    given.mkdir(parents=True, exist_ok=True)
    for stale in given.glob("*.db"):
        stale.unlink()
    return given, False


def remove_multiprocess_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.pop(MULTIPROCESS_ENV, None)


class Collects(Protocol):
    """Anything whose `collect()` yields metric families: a metric, a registry, a `HostMetric`."""

    def collect(self) -> Iterable[Metric]: ...


M = TypeVar("M", Counter, Histogram)

# Scoring is sub-millisecond to tens of milliseconds; the tail past a second is an outage.
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.route_latency = Histogram(
            "fstore_http_request_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "fstore_predict_seconds",
            "Time to answer a predict request, by the model versions that scored its rows.",
            ["model", "version"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "fstore_predictions",
            "Rows scored, by model, version, alias and role (served or shadow).",
            ["model", "version", "alias", "role"],
            registry=r,
        )
        self.errors = Counter(
            "fstore_errors",
            "Requests answered with an error, by kind (the exception class).",
            ["kind", "status"],
            registry=r,
        )
        self.missing_features = Counter(
            "fstore_missing_features",
            "Feature values that were missing at scoring time (scored as NaN), by model feature.",
            ["model", "feature"],
            registry=r,
        )
        self.log_dropped = Counter(
            "fstore_prediction_log_dropped",
            "Prediction log records dropped: the producer queue was full, the log was not running, "
            "Kafka refused them, or shutdown came before Kafka took them.",
            ["reason"],
            registry=r,
        )
        self.log_sent = Counter(
            "fstore_prediction_log_records",
            "Prediction log records handed to the Kafka producer (failures count as dropped).",
            registry=r,
        )
        self.shadow_dropped = Counter(
            "fstore_shadow_dropped",
            "Shadow scoring batches dropped because the shadow queue was full or scoring failed.",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter(
            "fstore_model_reloads",
            "Model snapshots swapped in (result=ok) or left out after a load error (result=error).",
            ["result"],
            registry=r,
        )
        self.loaded_versions = Gauge(
            "fstore_loaded_model_versions",
            "Model versions loaded in this server (the most any live worker holds).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.shed = Counter(
            "fstore_shed_requests",
            "Requests answered 503 at once by load shedding: serving.max_in_flight requests were "
            "already in flight (reason=in_flight), or the online store did not answer within "
            "serving.redis_deadline_ms (reason=redis_deadline).",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "fstore_requests_in_flight",
            "Requests this server's live workers are answering now (health probes and /metrics "
            "aside).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.unscored = Counter(
            "fstore_unscored_rows",
            "Predict rows answered without a score, by model and reason (all_missing: every "
            "feature was missing and the request did not ask for score_missing).",
            ["model", "reason"],
            registry=r,
        )

    def host(self) -> CollectorRegistry:
        """What to read for the host: every worker's values merged (multiprocess mode), or
        this process's own."""
        folder = multiprocess_dir()
        if folder is None:
            return self.registry
        _forget_dead_workers(folder)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged

    def close(self) -> None:
        """At a worker's exit: its live gauges leave the host's figures."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _forget_dead_workers(folder: Path) -> None:
    """A worker killed without its shutdown (kill -9, OOM) never said it left: its live gauges
    (requests in flight, models loaded) would count on. Its counters and histograms stay: what
    it served was served."""
    for path in folder.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(folder))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's: a reused pid, or a worker of another user
    try:  # a killed worker its supervisor has not reaped yet is a zombie: dead
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal probe is all there is
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class HostMetric:
    """One metric's families as the host sees them (`ServingMetrics.host()`), by name."""

    def __init__(self, metrics: ServingMetrics, metric: Counter | Histogram | Gauge) -> None:
        self.metrics = metrics
        self.name = next(iter(metric.collect())).name  # the family name, without _total

    def collect(self) -> list[Metric]:
        return [family for family in self.metrics.host().collect() if family.name == self.name]


class LatencyMiddleware:
    """Times every HTTP request by its route template (not the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.route_latency.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - start
            )


class Children(Generic[M]):
    """A labelled metric's children, each looked up once: `labels()` checks, converts to text
    and takes a lock on every call, a cost on each request's path for the same few children.

    >>> served = Children(ServingMetrics().predictions)
    >>> served("fraud", 1, "production", "served") is served("fraud", 1, "production", "served")
    True
    """

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[object, ...], M] = {}

    def __call__(self, *values: object) -> M:
        child = self._children.get(values)
        if child is None:
            # Two threads may both get here: `labels()` gives them the same child.
            child = self._children[values] = self.metric.labels(*map(str, values))
        return child
