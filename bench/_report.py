"""How a benchmark speaks: progress lines on stderr, figures as JSON on stdout, the summary's
cells.

Progress goes to stderr so that stdout's last line is always the run's figures, as one JSON
object a test or a parent process can parse.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

__all__ = ["emit", "log", "ratio", "show"]


def log(text: str) -> None:
    """Progress goes to stderr: stdout's last line is the figures' JSON."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout: how a measured subprocess reports to its parent."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def show(value: Any, unit: str = "") -> str:
    """A figure for the summary table: thousands separated, "n/a" when there is none."""
    if value is None:
        return "n/a"
    return f"{value:,}{unit}" if isinstance(value, int | float) else str(value)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)
