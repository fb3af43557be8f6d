"""What the dashboard shows, gathered from the stores a server already holds.

Each section is read on its own: a section whose source is down carries `error` (what failed
and what to do) and the others still answer, so the page never fails as a whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from featurestore.drift.history import drift_history, recent_alerts
from featurestore.drift.state import latest_drift
from featurestore.errors import FeatureStoreError
from featurestore.positions import NO_POSITION
from featurestore.timestamps import from_us, to_us
from serving.metrics import HostMetric
from serving.state import ServingState
from serving.ui.lag import LagProbe, lag
from serving.ui.traffic import TrafficSampler

__all__ = ["Dashboard"]

log = logging.getLogger(__name__)

_AUDIT_ROWS = 25  # newest audit entries per model
_HISTORY_RECORDS = 5_000  # drift records per model for the charts
_ALERTS = 50
# What a chart needs of a drift record (the full records carry thresholds and the sliding
# window too): a few hundred bytes less per point.
_DRIFT_FIELDS = (
    "version", "role", "kind", "column", "window_start", "window_end",
    "n", "psi", "js", "ks", "status",
)  # fmt: skip


class Dashboard:
    """One per app: the sampler and the lag cache live as long as the server."""

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.traffic = TrafficSampler(HostMetric(state.metrics, state.metrics.route_latency))
        self.lag = LagProbe(state.settings.kafka)

    def overview(self) -> dict[str, Any]:
        self.traffic.sample()
        return {
            "now": datetime.now(UTC).isoformat(),
            "traffic": self.traffic.summary(),
            "views": _section(self.views),
            "models": _section(self.models),
            "alerts": _section(self.alerts),
        }

    def views(self) -> list[dict[str, Any]]:
        now_us = to_us(datetime.now(UTC))
        registered = self.state.store.registry.list_views()
        ends = self.lag.ends(sorted({r.view.source.topic for r in registered}))
        out = []
        for r in registered:
            positions = self.state.online.positions(r.name, r.version)
            marks = [p.watermark for p in positions.values() if p.watermark > NO_POSITION.watermark]
            topic = ends[r.view.source.topic]
            offsets = {partition: p.offset for partition, p in positions.items()}
            out.append(
                {
                    "name": r.name,
                    "version": r.version,
                    "topic": r.view.source.topic,
                    "entities": r.view.join_keys,
                    "features": r.view.feature_names(),
                    "watermark": from_us(max(marks)).isoformat() if marks else None,
                    "freshness_s": (now_us - max(marks)) / 1e6 if marks else None,
                    "ttl": r.view.ttl,
                    "lag": None if topic.ends is None else lag(topic.ends, offsets),
                    "lag_error": topic.error,
                    "partitions": [
                        {
                            "partition": partition,
                            "offset": offsets.get(partition),
                            "low": low,
                            "high": high,
                        }
                        for partition, (low, high) in sorted((topic.ends or {}).items())
                    ],
                }
            )
        return out

    def models(self) -> list[dict[str, Any]]:
        registry = self.state.registry
        snapshot = self.state.models.snapshot
        scored = _scored_rows(self.state)
        out = []
        for name in registry.models():
            rollout = registry.rollout(name)
            loaded = snapshot.models.get(name)
            out.append(
                {
                    "name": name,
                    "aliases": rollout.aliases,
                    "traffic": rollout.traffic,
                    "load_error": snapshot.errors.get(name),
                    "versions": [
                        {
                            "version": v.version,
                            "created_at": v.created_at.isoformat(),
                            "created_by": v.created_by,
                            "primary_metric": v.primary_metric,
                            "metric": v.metrics.get(v.primary_metric),
                            "features": len(v.signature.features),
                            "description": v.description,
                            "loaded": loaded is not None and v.version in loaded.versions,
                            "rows_scored": scored.get((name, str(v.version)), 0),
                        }
                        for v in registry.versions(name)
                    ],
                    "history": [
                        {**asdict(entry), "at": entry.at.isoformat()}
                        for entry in reversed(registry.history(name)[-_AUDIT_ROWS:])
                    ],
                }
            )
        return out

    def alerts(self) -> dict[str, Any]:
        redis_settings = self.state.settings.redis
        drift = latest_drift(redis_settings)["models"]
        open_alerts = [alert for model in drift.values() for alert in model["alerts"]]
        open_alerts.sort(key=lambda a: str(a.get("since", "")), reverse=True)
        return {"open": open_alerts, "recent": recent_alerts(redis_settings, _ALERTS)}

    def drift(self) -> dict[str, Any]:
        """Per model: its drift records over time (compacted for charts) and the newest ones."""
        redis_settings = self.state.settings.redis

        def read() -> dict[str, Any]:
            latest = latest_drift(redis_settings)["models"]
            names = sorted(set(latest) | set(self.state.registry.models()))
            out: dict[str, Any] = {}
            for name in names:
                history = drift_history(redis_settings, name, _HISTORY_RECORDS)
                records = latest.get(name, {}).get("records", [])
                if not history and not records:
                    continue
                thresholds = next((r["thresholds"] for r in records if "thresholds" in r), None)
                out[name] = {
                    "history": [_compact(r) for r in history],
                    "latest": [_compact(r) for r in records],
                    "thresholds": thresholds,
                }
            return out

        return {"now": datetime.now(UTC).isoformat(), "models": _section(read)}


def _section(read: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"data": read(), "error": None}
    except FeatureStoreError as exc:
        log.warning("dashboard: %s", exc)
        return {"data": None, "error": str(exc)}


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record.get(name) for name in _DRIFT_FIELDS}


def _scored_rows(state: ServingState) -> dict[tuple[str, str], int]:
    """Rows served (not shadow) since this server started, by model and version (every
    worker's, under `fstore serve --workers N`)."""
    out: dict[tuple[str, str], int] = {}
    for metric in HostMetric(state.metrics, state.metrics.predictions).collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels.get("role") == "served":
                key = (s.labels["model"], s.labels["version"])
                out[key] = out.get(key, 0) + int(s.value)
    return out
