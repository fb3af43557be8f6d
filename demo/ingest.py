"""Knowing when `fstore ingest` has caught up: every view's stored position (in Redis, where
the worker keeps it with the tiles) has reached the end of every partition of its topic."""

from __future__ import annotations

import time
from collections.abc import Callable

from demo.errors import DemoError
from featurestore.online import OnlineStore

__all__ = ["applied", "wait_ingested"]

_POLL_S = 0.1


def applied(online: OnlineStore, views: list[tuple[str, int]], ends: dict[int, int]) -> int:
    """Events of the topic (up to `ends`) that the slowest view has applied."""
    counts = []
    for name, version in views:
        positions = online.positions(name, version)
        counts.append(
            sum(
                min(positions[p].offset + 1, end) if p in positions else 0
                for p, end in ends.items()
            )
        )
    return min(counts)


def wait_ingested(
    online: OnlineStore,
    views: list[tuple[str, int]],
    ends: dict[int, int],
    alive: Callable[[], None],
    timeout: float,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, float]:
    """Wait until the views reach `ends`; (events applied meanwhile, seconds from the first
    applied batch to the last). `alive()` raises when the worker died."""
    total = sum(ends.values())
    done = before = applied(online, views, ends)
    first: float | None = None
    deadline = time.monotonic() + timeout
    while done < total:
        alive()
        if time.monotonic() > deadline:
            raise DemoError(
                f"the worker applied {done - before:,} of {total - before:,} events in "
                f"{timeout:.0f}s",
                "read the worker's log; a slow machine may need more time (fewer --users)",
            )
        time.sleep(_POLL_S)
        now = applied(online, views, ends)
        if now > done:
            if first is None:
                # The first batch landed somewhere in the last poll interval.
                first = time.monotonic() - _POLL_S / 2
            if progress is not None:
                progress(now - done)
            done = now
    seconds = time.monotonic() - first if first is not None else 0.0
    return total - before, seconds
