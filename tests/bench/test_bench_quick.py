"""The ingest benchmark's `--quick` mode runs end to end, so bench/ingest.py never rots.

Only the output's shape is checked: timings on a shared CI machine say nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from featurestore.config import KafkaSettings

REQUIRED = {
    "events_per_s",
    "floor_events_per_s",
    "quix_events_per_s",
    "freshness_p50_ms",
    "freshness_p99_ms",
    "rss_mb_1m",
    "rss_mb_5m",
}


@pytest.mark.integration
def test_quick_run_prints_the_figures_as_json(
    run_quick: Callable[..., dict[str, Any]], kafka: KafkaSettings, redis: str
) -> None:
    figures = run_quick("ingest.py", "--no-quix", kafka=kafka, redis=redis)
    assert REQUIRED <= figures.keys(), REQUIRED - figures.keys()
    assert figures["quix_events_per_s"] is None  # skipped
    for key in REQUIRED - {"quix_events_per_s"}:
        assert isinstance(figures[key], int | float) and figures[key] > 0, (key, figures[key])
    # What the worker computed is checked against numpy, and no event was late.
    assert figures["worker_values_wrong"] == 0
    assert figures["worker_late"] == 0
    assert figures["freshness_probes_never_visible"] == 0


@pytest.mark.integration
def test_quick_run_of_the_percentile_variant(
    run_quick: Callable[..., dict[str, Any]], kafka: KafkaSettings, redis: str
) -> None:
    """`--percentiles --last-n 5`: the same workload with p50/p90/p99 of amount over every
    window and its 5 newest amounts."""
    figures = run_quick(
        "ingest.py", "--no-quix", "--percentiles", "--last-n", "5", kafka=kafka, redis=redis
    )
    assert figures["percentiles"] is True and figures["last_n"] == 5
    assert figures["events_per_s"] > 0
    assert figures["worker_values_wrong"] == 0
