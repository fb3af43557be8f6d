"""Load shedding: a bound on the requests one process has in flight, and a deadline on each
request's online-store read.

A hung or slow Redis must not turn into requests that each wait 30 s, pile up without bound and
take the process down with them. Past either bound a request answers 503 at once, with
`Retry-After`, and is counted (`fstore_shed_requests`): its client, or the load balancer in
front, tries again later or elsewhere, and the process stays responsive for everything else.

The count is a plain integer: one process serves on one event loop, and only that loop's
coroutines change it. Health probes and /metrics are never shed: a liveness probe refused under
load would get a busy process restarted, and the metrics are how an overload is seen.

A read given up at its deadline (its task cancelled) leaves the pipelined connection in step:
its call stays queued and its answers are dropped when they come (featurestore/redis_pipe.py).

>>> shedder = LoadShedder(ServingSettings(max_in_flight=2), RedisSettings(), ServingMetrics())
>>> shedder.counts({"type": "http", "path": "/v1/predict/fraud"}), shedder.deadline_s
(True, 0.25)
>>> shedder.counts({"type": "http", "path": "/healthz"})
False
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis
from starlette.types import Receive, Scope, Send

from featurestore.config import RedisSettings, ServingSettings
from featurestore.errors import RedisUnavailable
from featurestore.redis_client import redis_errors
from serving.error_responses import error_response
from serving.errors import Overloaded
from serving.metrics import ServingMetrics

__all__ = ["NEVER_SHED", "LoadShedder"]

_T = TypeVar("_T")

NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})


class LoadShedder:
    """The in-flight count and the Redis deadline of one app instance."""

    def __init__(self, config: ServingSettings, redis: RedisSettings, metrics: ServingMetrics):
        self.limit = config.max_in_flight
        self.deadline_s = config.redis_deadline_ms / 1000
        self.in_flight = 0
        self.redis = redis
        self.metrics = metrics
        self._over_limit = metrics.shed.labels("in_flight")
        self._past_deadline = metrics.shed.labels("redis_deadline")
        self._deadlines: _Deadlines | None = None  # of the loop that serves
        metrics.in_flight.set_function(lambda: self.in_flight)

    def counts(self, scope: Scope) -> bool:
        """Whether a request counts against the bound (everything but probes and metrics)."""
        if scope["type"] != "http":
            return False  # the lifespan
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # behind a proxy's prefix, as FastAPI strips it
            path = path[len(root) :]
        return path not in NEVER_SHED

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request that found the bound reached: 503 with Retry-After, at once."""
        self._over_limit.inc()
        error = Overloaded(
            f"this server already has {self.limit} requests in flight (serving.max_in_flight): "
            "retry later"
        )
        await error_response(error, self.metrics)(scope, receive, send)

    async def read(self, call: Awaitable[_T]) -> _T:
        """`await call` — a request's reads of the online store — within the deadline.

        Past it, a `RedisUnavailable` (503 with Retry-After), counted. An error reply raised by
        the asyncio read path (`OnlineStore.read_async` raises it as a `redis.ResponseError`)
        is classified by `redis_errors` like every other: LOADING, BUSY... are a
        `RedisUnavailable`, anything else a bug that passes through.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)  # given the loop: half the cost of finding it again
        if task is None:  # not in a task: nothing to cancel (no request is served so)
            return await call
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = _Deadlines(loop, self.deadline_s)
        deadlines.add(task)
        try:
            return await call
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise  # cancelled by someone else: theirs to handle
            task.uncancel()
            self._past_deadline.inc()
            raise RedisUnavailable(
                f"Redis at {self.redis.shown_url} did not answer within "
                f"{self.deadline_s * 1000:g} ms (serving.redis_deadline_ms)"
            ) from None
        except redis.RedisError:
            with redis_errors(self.redis):
                raise
        finally:
            deadlines.done(task)


class _Deadlines:
    """The deadlines of the reads in flight on one event loop, kept by one timer.

    `asyncio.timeout` would schedule and cancel a timer per request: ~8 µs a request on uvloop
    (measured), against ~1 µs for all of this. Every read has the same allowance, so the reads'
    deadlines come in the order the reads start: an insertion-ordered dict holds them sorted,
    and one timer, set for the oldest, cancels the tasks whose time is up and is set again for
    the next. Under load that is one timer per deadline, not one per request.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, allowance_s: float) -> None:
        self.loop = loop
        self.allowance_s = allowance_s
        self.reads: dict[asyncio.Task[Any], float] = {}  # task -> its deadline (loop time)
        self.cancelled: set[asyncio.Task[Any]] = set()  # past their deadline, told so
        self.timer: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Task[Any]) -> None:
        deadline = self.loop.time() + self.allowance_s
        self.reads[task] = deadline
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._expire)

    def done(self, task: asyncio.Task[Any]) -> None:
        self.reads.pop(task, None)
        self.cancelled.discard(task)  # told too late to be heard: nothing to keep

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task` was cancelled here, past its deadline (and forget it)."""
        if task in self.cancelled:
            self.cancelled.discard(task)
            return True
        return False

    def _expire(self) -> None:
        self.timer = None
        now = self.loop.time()
        reads = self.reads
        late = []
        for task, deadline in reads.items():
            if deadline > now:
                self.timer = self.loop.call_at(deadline, self._expire)
                break
            late.append(task)
        for task in late:
            del reads[task]
            if task.cancel():
                self.cancelled.add(task)
