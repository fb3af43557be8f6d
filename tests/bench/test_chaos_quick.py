"""The chaos benchmark's `--quick` mode runs end to end, so bench/chaos.py never rots.

Unlike the timing benchmarks, its figures are verdicts, so they are asserted: one fault of each
kind happened, and nothing was lost, doubled or wrong. The script starts a Kafka broker and a
Redis of its own (it restarts and wipes them): the session's servers are not handed to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REQUIRED = {
    "events",
    "poison_messages",
    "dead_lettered",
    "lost",
    "duplicated",
    "wrong_values",
    "consumer_crashes",
    "redis_restarts",
    "redis_wipes",
    "kafka_restarts",
    "worker_kills",
    "requests",
    "responses_5xx",
    "responses_503",
    "p99_ms_503_during_redis_stall",
}


@pytest.mark.integration
@pytest.mark.chaos
def test_quick_run_survives_one_fault_of_each_kind(
    run_quick: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    figures = run_quick("chaos.py", "--tmp", str(tmp_path))
    assert REQUIRED <= figures.keys(), REQUIRED - figures.keys()
    # Each fault happened, for real.
    assert figures["redis_wipes"] == 1 and figures["redis_restarts"] == 2
    assert figures["kafka_restarts"] == 1 and figures["worker_kills"] == 2
    assert figures["redis_stalls"] == 1
    assert figures["state_rebuilds"] >= 1  # the wipe was found and repaired
    # Nothing lost, doubled or wrong; every poison message dead-lettered with its reason.
    assert figures["poison_kinds"] == 18 and figures["poison_messages"] > 0
    assert figures["dead_lettered"] == figures["poison_messages"] + figures["late"]
    for key in (
        "lost",
        "duplicated",
        "wrong_values",
        "wrong_statuses",
        "log_wrong",
        "log_unexpected",
        "dead_letters_missing",
        "dead_letters_wrong_reason",
        "dead_letters_of_accepted_events",
        "consumer_crashes",
        "server_crashes",
        "responses_5xx",
        "no_response",
        "scores_wrong",
        "features_wrong",
    ):
        assert figures[key] == 0, (key, figures[key], figures.get("wrong_examples"))
    assert figures["values_compared"] > 0 and figures["scores_checked"] > 0
    assert figures["log_rows"] == figures["accepted"] == figures["events"] - figures["late"]
    # The stall was met with 503s, and those came within the deadline (with a loaded machine's
    # margin); afterwards, every request scored again.
    assert figures["responses_503_during_redis_stall"] > 0
    assert figures["p99_ms_503_during_redis_stall"] < figures["redis_deadline_ms"] + 750
    assert figures["responses_after_redis_stall"] > 0
    assert figures["responses_200_after_redis_stall"] == figures["responses_after_redis_stall"]
    assert all(figures["goals_met"].values()), figures["goals_met"]
    assert figures["worker_exit_code"] == 0
    assert list(tmp_path.iterdir()) == []  # the working folder is removed
