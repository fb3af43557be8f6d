"""The Redis Cluster benchmark's `--quick` mode runs end to end (it starts its own one Redis
and cluster), so bench/redis_cluster.py never rots. Only the output's shape is checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.integration
def test_quick_run_prints_the_figures_as_json(run_quick: Callable[..., dict[str, Any]]) -> None:
    figures = run_quick("redis_cluster.py")
    for side in ("single", "single16", "cluster"):
        write = figures[f"write_{side}"]
        for key in ("events_per_s", "writer_cpu_us_per_event", "redis_cpu_us_per_event"):
            assert write[key] > 0, (side, key, write)
    assert figures["write_cluster"]["shards"] == 16
    for side in ("single", "cluster"):
        assert figures[f"read_{side}"]["p99_ms"] > 0
        assert figures[f"read_{side}"]["saturated_reads_per_s"] > 0
