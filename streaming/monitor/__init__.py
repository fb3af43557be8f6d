"""The drift monitor: prediction log (and labels) -> windowed drift statistics and alerts."""

from __future__ import annotations

from streaming.monitor.monitor import Monitor, MonitorCounters

__all__ = ["Monitor", "MonitorCounters"]
