"""The machine a benchmark measures on, and what else it did meanwhile.

Every script measures on a shared machine; a figure is only worth what the machine did
meanwhile, so each measurement is wrapped in a `Meter` and its `other_processes_cores` printed
beside it. Only the standard library is imported here: measured subprocesses, and peers in
virtualenvs of their own (bench/feast_app.py), import this module too, and their peak RSS should
hold what they measure.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import log

__all__ = [
    "Meter",
    "machine",
    "machine_busy_seconds",
    "peak_rss_mb",
    "tree_cpu_seconds",
    "wait_for_quiet",
]


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
