"""The window-kinds read benchmark's `--quick` mode runs end to end (it starts its own Redis),
so bench/window_reads.py never rots. Only the output's shape is checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.integration
def test_quick_run_prints_the_figures_as_json(run_quick: Callable[..., dict[str, Any]]) -> None:
    figures = run_quick("window_reads.py")
    assert figures["plain"]["features"] == 12
    assert figures["kinds"]["features"] == 20
    for side in ("plain", "kinds"):
        for key in ("folded_reads_per_s", "cached_reads_per_s"):
            assert figures[side][key] > 0, (side, key)
