"""The registry benchmark's `--quick` mode runs end to end on both backends, so
bench/registry.py never rots. Only the output's shape is checked, and that promotions at once
kept the audit chain: timings on a shared machine say nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.integration
def test_quick_run_prints_the_figures_as_json(
    run_quick: Callable[..., dict[str, Any]],
    postgres_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FSTORE_BENCH_POSTGRES_URL", postgres_database)
    figures = run_quick("registry.py", "--tmp", str(tmp_path))
    for backend in ("sqlite", "postgresql"):
        row = figures[backend]
        for call in ("generation", "list_views", "get_model", "apply", "promote"):
            assert row[call]["median_ms"] > 0 and row[call]["p99_ms"] >= row[call]["median_ms"]
        assert row["concurrent_promotions_per_s"] > 0
        assert row["audit_chain_intact"] is True
