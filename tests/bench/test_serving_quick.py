"""The serving benchmark's `--quick` mode runs end to end, so bench/serving.py never rots.

Only the output's shape and the checks are asserted: every request answered 200, ours and the
floor score alike, the features equal numpy, and with `--keys` the keyed server (an API key on
every request) answers like the open one. Timings on a shared CI machine say nothing. Feast is
skipped (its virtualenv takes minutes to make); `--quick --feast` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from featurestore.config import KafkaSettings

MEASURED = {
    "p50_ms_50rps",
    "p99_ms_50rps",
    "p99_ms_200rps",
    "rps_saturated",
    "batch100_p99_ms",
    "batch100_rps_saturated",
    "floor_p99_ms_50rps",
    "floor_p99_ms_200rps",
    "floor_rps_saturated",
    "floor_batch100_p99_ms",
    "keyed_rps_saturated",
    "keyed_p99_ms_50rps",
    "rps_keyed_vs_open_saturated",
}
SKIPPED = {
    "feast_rps_saturated",
    "feast_p99_ms_50rps",
    "rps_vs_feast_saturated",
    "feast_shipped_rps_saturated",
    "rps_vs_feast_shipped_saturated",
}


@pytest.mark.integration
def test_quick_run_prints_the_figures_as_json(
    run_quick: Callable[..., dict[str, Any]], kafka: KafkaSettings, redis: str, tmp_path: Path
) -> None:
    figures = run_quick("serving.py", "--keys", "--tmp", str(tmp_path), kafka=kafka, redis=redis)
    assert (MEASURED | SKIPPED) <= figures.keys(), (MEASURED | SKIPPED) - figures.keys()
    for key in MEASURED:
        assert isinstance(figures[key], int | float) and figures[key] > 0, (key, figures[key])
    for key in SKIPPED:
        assert figures[key] is None, (key, figures[key])  # Feast skipped

    # Every request of every point was answered, with 200.
    points = figures["points"]
    # (single, batch) x (50, 200, saturated) x (ours, ours with a key, floor)
    assert len(points) == 2 * 3 * 3
    for point in points:
        assert point["responses"] == point["requests"] > 0, point
        assert point["statuses"] == {"200": point["requests"]}, point
    assert figures["non_200"] == 0 and figures["no_response"] == 0
    assert figures["all_succeeded"] is True
    assert figures["requests"] == sum(p["requests"] for p in points)

    # The work is the same: our features equal numpy, ours and the floor score alike.
    assert figures["ingest"]["applied"] == figures["events"]
    assert figures["ingest"]["late"] == 0
    assert figures["features_wrong"] == 0
    assert figures["scores_differ"] == 0
    assert figures["model"]["trees"] == 200
    assert figures["model"]["mean_leaves"] > 2  # trees that split: predict costs what it should
    assert set(figures["goals_met"]) == {
        "p99_vs_floor_50rps",
        "p99_vs_floor_200rps",
        "rps_vs_floor_saturated",
        "rps_vs_feast_saturated",
        "rps_vs_feast_shipped_saturated",
        "rps_keyed_vs_open_saturated",
    }
    assert set(figures["load"]) == {
        f"{target}_{shape}_{rate}"
        for target in ("ours", "ours_keyed", "floor")
        for shape in ("single", "batch100")
        for rate in ("50rps", "200rps", "saturated")
    }
    assert list(tmp_path.iterdir()) == []  # the working folder is removed


def test_auth_cost_quick_run_times_the_key_check(run_quick: Callable[..., dict[str, Any]]) -> None:
    figures = run_quick("auth_cost.py")
    for key in ("open_us", "key_us", "rate_limited_key_us"):
        assert isinstance(figures[key], float) and figures[key] > 0, (key, figures)
    assert figures["keys"] == 10


def test_on_demand_cost_quick_run_times_two_features(
    run_quick: Callable[..., dict[str, Any]],
) -> None:
    figures = run_quick("on_demand_cost.py")
    assert figures["features"] == 2
    for shape in ("single", "batch100"):
        assert figures[shape]["on_demand_us"] > 0, figures
    assert 0 < figures["share_of_single_request"] < 1


def test_on_demand_stages_quick_run_attributes_the_cost(
    run_quick: Callable[..., dict[str, Any]], kafka: KafkaSettings, redis: str
) -> None:
    figures = run_quick("on_demand_stages.py", kafka=kafka, redis=redis)
    models = ("bench_model", "bench_model_wide", "bench_model_od")
    assert set(figures["cpu_us_per_request"]) == set(models)
    for model in models:
        assert figures["cpu_us_per_request"][model] > 0, figures
        stages = figures["stages_us_profiled"][model]
        assert stages["score"] > 0 and stages["read_views"] > 0, stages
    # Only the model with request-time features runs any.
    assert figures["stages_us_profiled"]["bench_model_od"]["on_demand"] > 0
    assert figures["stages_us_profiled"]["bench_model_wide"]["on_demand"] == 0
    # The parse + fill timings, hot and cold, ran for each model (their differences are
    # figures to read, not to assert: timings on a shared machine).
    for timings in ("parse_fill_us_per_request", "parse_fill_cold_us_median"):
        assert set(figures[timings]) == set(models), figures
        assert all(us > 0 for us in figures[timings].values()), figures
