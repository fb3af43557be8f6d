"""The training-set benchmark's `--quick` mode runs end to end, so bench/training_set.py never rots.

Only the output's shape and the value checks are asserted: timings on a shared CI machine say
nothing. `--s3` runs the query on a log on SeaweedFS too (its cached build: `make seaweedfs`).
Feast is skipped (its virtualenv takes minutes to make); `--quick --feast` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

REQUIRED = {
    "seconds",
    "peak_rss_mb",
    "sql_floor_seconds",
    "latest_only_seconds",
    "feast_latest_only_seconds",
    "seconds_by_events",
}


def test_quick_run_prints_the_figures_as_json(
    run_quick: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    figures = run_quick("training_set.py", "--no-feast", "--s3", "--tmp", str(tmp_path))
    assert REQUIRED <= figures.keys(), REQUIRED - figures.keys()
    assert figures["feast_latest_only_seconds"] is None  # skipped
    for key in REQUIRED - {"feast_latest_only_seconds", "seconds_by_events"}:
        assert isinstance(figures[key], int | float) and figures[key] > 0, (key, figures[key])
    by_events = figures["seconds_by_events"]
    assert sorted(int(n) for n in by_events) == [5_000, 10_000, 20_000]
    assert all(isinstance(s, int | float) and s > 0 for s in by_events.values()), by_events
    # Ours and the hand-written floor agree on every sampled value, and both equal numpy.
    assert figures["floor_check"]["wrong"] == {}
    assert figures["floor_check"]["values_compared"] > 0
    assert figures["floor_latest_check"]["wrong"] == {}
    assert figures["limited_check"]["wrong"] == {}  # under offline.memory_limit
    for name in ("ours", "floor"):
        assert figures["brute_force_check"][name]["wrong"] == 0, figures["brute_force_check"]
    # The same query with the log on a real S3 server (SeaweedFS): the same rows.
    assert figures["s3_check"]["wrong"] == {} and figures["s3_check"]["values_compared"] > 0
    assert figures["s3_seconds"] > 0 and figures["s3_local_seconds"] > 0
    assert figures["s3_log_objects"] > 0
    assert list(tmp_path.iterdir()) == []  # the working folder is removed
