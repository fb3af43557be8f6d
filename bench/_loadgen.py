"""The load generator for HTTP benchmarks: `hey`, at a fixed rate or saturated, and the
latency percentiles of what it measured."""

from __future__ import annotations

import math
import os
import shutil
import subprocess  # noqa: S404 - hey runs as a subprocess
import time
from collections.abc import Sequence
from typing import Any

from _report import log

__all__ = ["hey", "hey_argv", "hey_binary", "percentile", "run_hey"]


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
    headers: Sequence[tuple[str, str]] = (),
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
    argv = hey_argv(body, timeout, headers)
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
    rows = run_hey(url, runs, (1 / rate) if rate else 0.0, budget)
    latencies = sorted(round(latency * 1000, 1) for _sent, latency, _status in rows)
    ends = [sent + latency for sent, latency, _status in rows]
    statuses: dict[str, int] = {}
    for _sent, _latency, status in rows:
        statuses[status] = statuses.get(status, 0) + 1
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


def hey_argv(body: bytes, timeout: float, headers: Sequence[tuple[str, str]] = ()) -> list[str]:
    """hey's options for POSTing `body` as JSON (with `headers`), one CSV row per answered
    request."""
    argv = [hey_binary(), "-m", "POST", "-T", "application/json", "-t", f"{timeout:g}"]
    for name, value in headers:
        argv += ["-H", f"{name}: {value}"]
    return [*argv, "-o", "csv", "-d", body.decode()]


def run_hey(
    url: str, runs: list[list[str]], stagger: float, budget: float
) -> list[tuple[float, float, str]]:
    """Start each hey command line of `runs` against `url`, `stagger` s after the one before,
    and wait for all of them: per answered request, (when it was sent, in s since the first
    start; its latency in s; its status code)."""
    began = time.perf_counter()
    started: list[tuple[float, subprocess.Popen[str]]] = []
    for i, run in enumerate(runs):
        time.sleep(max(0.0, began + i * stagger - time.perf_counter()))
        started.append(
            (
                time.perf_counter() - began,
                subprocess.Popen(  # noqa: S603 - argv built here
                    [*run, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                ),
            )
        )
    rows: list[tuple[float, float, str]] = []
    for offset, process in started:
        out, err = process.communicate(timeout=budget)
        if process.returncode != 0:
            raise RuntimeError(f"hey failed ({process.returncode}): {err[-2000:]}")
        for line in out.splitlines()[1:]:
            fields = line.split(",")  # response-time,...,status-code,offset (seconds)
            if len(fields) < 8:
                continue
            rows.append((offset + float(fields[7]), float(fields[0]), fields[6]))
    return rows
