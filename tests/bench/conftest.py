"""How the bench tests run a benchmark: its `--quick` mode in a subprocess, as a user runs it,
with the figures read from the last line of its stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from featurestore.config import KafkaSettings

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="session")
def run_quick() -> Callable[..., dict[str, Any]]:
    """`run_quick("ingest.py", *args, kafka=..., redis=...)`: the script's `--quick` run must
    succeed; its figures. Given the session's servers, the script starts none of its own."""

    def run(
        script: str, *args: str, kafka: KafkaSettings | None = None, redis: str | None = None
    ) -> dict[str, Any]:
        env = dict(os.environ)
        if kafka is not None:
            env["FSTORE_KAFKA_BOOTSTRAP"] = kafka.bootstrap
        if redis is not None:
            env["FSTORE_REDIS_URL"] = redis
        result = subprocess.run(
            [sys.executable, str(BENCH / script), "--quick", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,  # under the suite's 300 s per test: this says which script hung
            check=False,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return figures

    return run
