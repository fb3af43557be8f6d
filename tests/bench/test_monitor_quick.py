"""The monitor benchmark's `--quick` mode runs end to end, so bench/monitor.py never rots.

Only the output's shape and its checks are asserted (every prediction counted once, every
window reported, every request answered); timings on a shared machine say nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from featurestore.config import KafkaSettings


@pytest.mark.integration
def test_quick_run_prints_the_figures_as_json(
    run_quick: Callable[..., dict[str, Any]], kafka: KafkaSettings, redis: str, tmp_path: Path
) -> None:
    figures = run_quick("monitor.py", "--tmp", str(tmp_path), kafka=kafka, redis=redis)
    assert {"predictions_per_s", "serving_rps_log_on", "serving_rps_log_off"} <= figures.keys()
    assert figures["predictions_per_s_label_index"] > 0
    assert figures["throughput"]["label_index"]["counted"] == figures["throughput"]["counted"]
    assert isinstance(figures["predictions_per_s"], int) and figures["predictions_per_s"] > 0

    throughput = figures["throughput"]
    partitions = throughput["partitions"]
    # Every prediction counted once (plus one per partition that closes the last window) ...
    assert throughput["counted"] == throughput["predictions"] + partitions
    assert throughput["late"] == 0
    # ... and an hour of 5-minute windows reported: 12 features and the score in each.
    assert throughput["windows_closed"] == 12
    assert throughput["drift_records"] == 12 * (throughput["features"] + 1)
    assert throughput["drift_topic_records"] == throughput["drift_records"]
    assert throughput["alerts"] == 0  # the stream is drawn from the training population

    # The serving part ran: a failure there exits non-zero (run_quick fails), and no reason
    # for one is ever an answer here.
    serving = figures["serving"]
    assert "reason" not in serving, serving
    assert figures["serving_rps_log_on"] > 0 and figures["serving_rps_log_off"] > 0
    # Every answer is a score, or a 503 of load shedding when the machine is too busy to keep
    # up (a designed answer, with Retry-After; not a failure of the path measured).
    assert serving["statuses"].get("200", 0) > 0
    assert set(serving["statuses"]) <= {"200", "503"}, serving["statuses"]
    assert serving["non_200"] == serving["statuses"].get("503", 0)
    assert serving["log_records"] > 0  # the server with the log on did log
    assert {r["log"] for r in serving["rounds"]} == {"on", "off"}
    assert set(figures["goals_met"]) == {"predictions_per_s", "log_on_vs_off"}
    assert list(tmp_path.iterdir()) == []  # the working folder is removed
