"""Live request rate and latency of the predict route, from the app's own Prometheus histogram.

The histogram is cumulative since the server started; the dashboard wants the recent past.
Each dashboard poll takes a sample of it (at most one a second) and keeps ten minutes of them;
the difference of two consecutive samples is one point: requests per second, error rate, and
percentiles interpolated inside the buckets, as Prometheus' `histogram_quantile` does. Reading
the histogram leaves the predict route untouched, at the price of points only while a page
polls. The histogram read is the host's (`ServingMetrics.host()`): under `fstore serve --workers
N` the figures are every worker's together, whichever worker answers the poll; each worker keeps
its own samples, so with N workers a page's points are about N polls apart.

>>> round(quantile((0.001, 0.01, float("inf")), (0, 10, 10), 0.5), 6)
0.0055
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from serving.metrics import Collects

__all__ = ["PREDICT_ROUTE", "TrafficSampler", "quantile"]

PREDICT_ROUTE = "/v1/predict/{model}"
_KEEP_S = 600.0
_MIN_STEP_S = 1.0
_QUANTILES = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))


@dataclass(frozen=True)
class _Sample:
    mono: float  # time.monotonic(): differences, immune to clock steps
    at: datetime
    bounds: tuple[float, ...]  # bucket upper bounds, ascending, ending with +Inf
    cumulative: tuple[float, ...]  # requests at or under each bound
    count: float
    total_s: float
    errors: float  # answered with a status of 400 or more


class TrafficSampler:
    def __init__(
        self, histogram: Collects, route: str = PREDICT_ROUTE, min_step_s: float = _MIN_STEP_S
    ) -> None:
        self.histogram = histogram
        self.route = route
        self.min_step_s = min_step_s  # two pages polling add no points closer than this
        self._samples: deque[_Sample] = deque()
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Take a sample unless the last one is under `min_step_s` old."""
        with self._lock:
            now = time.monotonic()
            if self._samples and now - self._samples[-1].mono < self.min_step_s:
                return
            self._samples.append(self._read(now))
            while now - self._samples[0].mono > _KEEP_S:
                self._samples.popleft()

    def summary(self) -> dict[str, Any]:
        """Totals since the server started, and one point per pair of consecutive samples."""
        with self._lock:
            samples = list(self._samples)
        series = [_point(a, b) for a, b in zip(samples, samples[1:], strict=False)]
        last = samples[-1] if samples else None
        totals: dict[str, Any] = {"requests": 0, "errors": 0}
        if last is not None:
            totals = {"requests": int(last.count), "errors": int(last.errors)}
            totals.update(_percentiles(last.bounds, last.cumulative, last.count))
        return {"route": self.route, "totals": totals, "series": series}

    def _read(self, now: float) -> _Sample:
        buckets: dict[float, float] = {}
        count = total = errors = 0.0
        for metric in self.histogram.collect():
            for s in metric.samples:
                if s.labels.get("route") != self.route:
                    continue
                if s.name.endswith("_bucket"):
                    bound = float(s.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + s.value
                elif s.name.endswith("_count"):
                    count += s.value
                    if s.labels.get("status", "").isdigit() and int(s.labels["status"]) >= 400:
                        errors += s.value
                elif s.name.endswith("_sum"):
                    total += s.value
        bounds = tuple(sorted(buckets))
        return _Sample(
            now,
            datetime.now(UTC),
            bounds,
            tuple(buckets[b] for b in bounds),
            count,
            total,
            errors,
        )


def quantile(bounds: Sequence[float], cumulative: Sequence[float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, linear inside its bucket; None when empty.

    In the +Inf bucket it is the highest finite bound, as Prometheus answers.
    """
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    lower, below = 0.0, 0.0
    for bound, at_or_under in zip(bounds, cumulative, strict=True):
        if at_or_under >= rank:
            if bound == float("inf"):
                return lower
            inside = at_or_under - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, at_or_under
    return lower


def _percentiles(
    bounds: Sequence[float], cumulative: Sequence[float], count: float
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, q in _QUANTILES:
        value = quantile(bounds, cumulative, q) if count > 0 else None
        out[name] = None if value is None else round(value * 1000, 3)
    return out


def _point(before: _Sample, after: _Sample) -> dict[str, Any]:
    seconds = max(after.mono - before.mono, 1e-9)  # never 0, even when sampled back to back
    count = after.count - before.count
    point: dict[str, Any] = {
        "at": after.at.isoformat(),
        "rate": round(count / seconds, 3),
        "error_rate": round((after.errors - before.errors) / seconds, 3),
        "mean_ms": round((after.total_s - before.total_s) / count * 1000, 3) if count else None,
    }
    if after.bounds == before.bounds:
        delta = [a - b for a, b in zip(after.cumulative, before.cumulative, strict=True)]
        point.update(_percentiles(after.bounds, delta, count))
    else:  # the route's first request came in between: nothing to subtract
        point.update(_percentiles(after.bounds, after.cumulative, count))
    return point
