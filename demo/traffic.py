"""Scoring traffic against `fstore serve`: a load test that measures latency and throughput as a
client sees them, and a steady stream of requests for a given span of wall time (drift).

Plain `http.client` with one keep-alive connection per client thread: nothing to install, and
its per-request cost is small next to a scoring call.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from demo.errors import DemoError

__all__ = ["LoadResult", "ScoringClient", "load_test", "send_until", "wait_ready"]

Row = tuple[str, str]  # (user_id, merchant_id)


class ScoringClient:
    """One keep-alive connection. A 503 (Redis slow past the deadline on a busy machine, a
    shed request) is asked again after its `Retry-After`, as any client should, `retries`
    times."""

    def __init__(
        self, host: str, port: int, model: str, timeout: float = 10.0, retries: int = 3
    ) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout)
        self.path = f"/v1/predict/{model}"
        self.retries = retries

    def predict(self, rows: Sequence[Row]) -> list[float]:
        attempts = 0
        while True:
            try:
                return self._predict(rows)
            except _Again as again:
                attempts += 1
                if attempts > self.retries:
                    body = again.body[:300]
                    raise DemoError(f"POST {self.path} answered 503: {body!r}") from None
                time.sleep(again.seconds)

    def _predict(self, rows: Sequence[Row]) -> list[float]:
        body = orjson.dumps(
            {
                "entities": {
                    "user_id": [user for user, _ in rows],
                    "merchant_id": [merchant for _, merchant in rows],
                }
            }
        )
        try:
            self.connection.request(
                "POST", self.path, body, headers={"Content-Type": "application/json"}
            )
            response = self.connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()  # reconnects on the next request
            raise DemoError(f"POST {self.path} failed: {exc}") from exc
        if response.status == 503:
            raise _Again(_retry_after(response.getheader("Retry-After")), payload)
        if response.status != 200:
            raise DemoError(f"POST {self.path} answered {response.status}: {payload[:300]!r}")
        scores: list[float] = orjson.loads(payload)["scores"]
        return scores

    def get(self, path: str) -> tuple[int, Any]:
        """GET a JSON endpoint: (status, body or None)."""
        try:
            self.connection.request("GET", path)
            response = self.connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            return 0, None
        try:
            return response.status, orjson.loads(payload)
        except orjson.JSONDecodeError:
            return response.status, None

    def close(self) -> None:
        self.connection.close()


class _Again(Exception):
    """A 503: come back after `seconds`."""

    def __init__(self, seconds: float, body: bytes) -> None:
        super().__init__(f"retry after {seconds:g}s")
        self.seconds, self.body = seconds, body


def _retry_after(header: str | None, most: float = 5.0) -> float:
    """The wait a `Retry-After` of whole seconds asks for (1 s without one), capped."""
    try:
        return min(most, max(0.0, float(header))) if header else 1.0
    except ValueError:
        return 1.0


@dataclass
class LoadResult:
    clients: int = 1
    requests: int = 0
    rows: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def load_test(
    connect: Callable[[], ScoringClient],
    rows: Sequence[Row],
    requests: int,
    clients: int,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """`requests` one-row requests over `clients` threads, rows taken in turn."""
    result = LoadResult(clients)
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        scorer = connect()
        try:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                began = time.perf_counter()
                try:
                    scorer.predict([rows[index % len(rows)]])
                except DemoError as exc:
                    with lock:
                        result.errors.append(str(exc))
                    continue
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    result.latencies_ms.append(elapsed)
                    result.requests += 1
                    result.rows += 1
                if progress is not None:
                    progress(1)
        finally:
            scorer.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    return result


def send_until(
    scorer: ScoringClient, rows: Sequence[Row], until: float, batch: int = 50
) -> LoadResult:
    """Score `rows` in turn, `batch` per request, until time.time() reaches `until`."""
    result = LoadResult()
    began, position = time.perf_counter(), 0
    while time.time() < until:
        chunk = [rows[(position + i) % len(rows)] for i in range(batch)]
        position += batch
        try:
            scorer.predict(chunk)
        except DemoError as exc:
            result.errors.append(str(exc))
            continue
        result.requests += 1
        result.rows += len(chunk)
    result.seconds = time.perf_counter() - began
    return result


def wait_ready(
    connect: Callable[[], ScoringClient], model: str, alive: Callable[[], None], timeout: float
) -> None:
    """Until /readyz says the server is ready and serves `model`; `alive()` raises when the
    server died."""
    client = connect()
    deadline = time.monotonic() + timeout
    try:
        while True:
            alive()
            status, body = client.get("/readyz")
            if status == 200 and isinstance(body, dict) and model in body.get("models", {}):
                return
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the server was not ready to score {model!r} in {timeout:.0f}s: {body}"
                )
            time.sleep(0.3)
    finally:
        client.close()
