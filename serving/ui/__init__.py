"""The dashboard behind `/ui` (routes in `serving/routes/ui.py`): what it reads and how.

`overview.py` gathers each section from the stores the server holds, `traffic.py` turns the
predict route's latency histogram into a live rate and percentiles, and `lag.py` asks Kafka how
far ingestion is behind. `static/` holds the page and its script, served as they are: there is
no build step.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC"]

STATIC = Path(__file__).parent / "static"
