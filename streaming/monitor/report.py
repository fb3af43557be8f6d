"""Closed windows -> drift and performance records, alert events, and the Redis writes that
commit them (the latest state, the episodes, and the clean-up of what is no longer needed).

A drift record describes one column (a model's feature, its score, or a watched source
column) of one model version and role over one tumbling window, with the sliding window that
ends with it (the merge of the last `monitor.sliding_windows` tumbling ones). Alerts are
evaluated on the tumbling window: an episode opens within the window a shift starts in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from featurestore.config import MonitorSettings
from featurestore.drift.accumulator import empty, merge
from featurestore.drift.compare import ALERT, INSUFFICIENT, OK, compare
from featurestore.drift.state import latest_key, models_key
from featurestore.models.promotion import HIGHER_IS_BETTER
from featurestore.timestamps import from_us
from streaming.monitor.alerts import Episodes
from streaming.monitor.labels import JoinResult, live_metrics, pairs_text, parse_pairs
from streaming.monitor.references import PERFORMANCE, SCORE, Reference, References
from streaming.monitor.state import Closing, MonitorState, Snapshot

__all__ = ["Report", "Reporter"]

log = logging.getLogger("fstore.monitor")


@dataclass
class Report:
    records: list[dict[str, Any]] = field(default_factory=list)  # drift, then performance
    events: list[dict[str, Any]] = field(default_factory=list)
    ops: list[list[Any]] = field(default_factory=list)
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


class Reporter:
    def __init__(
        self,
        config: MonitorSettings,
        references: References,
        episodes: Episodes,
        state: MonitorState,
        namespace: str,
    ) -> None:
        self.config = config
        self.references = references
        self.episodes = episodes
        self.state = state
        self.namespace = namespace
        self.window_us = config.window_us

    def report(
        self,
        seen: Snapshot,
        closing: Closing,
        joined: JoinResult | None,
        closed: int,
        performed: int | None,
    ) -> Report:
        out = Report()
        self._drift(out, seen, closing, closed)
        if joined is not None and performed is not None:
            self._performance(out, seen, closing, joined, performed)
        for (model, name), record in out.latest.items():
            out.ops.append(["sadd", models_key(self.namespace), model])
            out.ops.append(["hset", latest_key(self.namespace, model), name, _json(record)])
        # Tumbling windows stay while a later sliding window still reaches them; closed, they
        # are finished state and expire (`state.finished_ttl_ms`) if no closing step frees them.
        keep_from = closed - (self.config.sliding_windows - 1) * self.window_us
        for start, fields in closing.windows.items():
            if start < keep_from or not fields:  # (no fields: it expired; counted once)
                out.ops += [
                    ["del", self.state.window_key(start)],
                    ["zrem", f"{self.state.prefix}:windows", str(start)],
                ]
            else:
                out.ops.append(["pexpire", self.state.window_key(start), str(self.state.ttl_ms)])
        return out

    def _drift(self, out: Report, seen: Snapshot, closing: Closing, closed: int) -> None:
        span = self.config.sliding_windows
        for start in sorted(closing.windows):
            if start >= closed or (seen.closed is not None and start < seen.closed):
                continue
            for name, blob in sorted(closing.windows[start].items()):
                model, version, role, kind, column = name.split("|", 4)
                reference = self.references.get(model, int(version))
                profile = None if reference is None else reference.columns.get((kind, column))
                if profile is None:
                    log.warning("no reference for %s in window %s: not reported", name, start)
                    continue
                tumbling = np.frombuffer(blob, dtype="<f8")
                sliding = empty(tumbling.size - 7)
                for earlier in range(
                    start - (span - 1) * self.window_us, start + 1, self.window_us
                ):
                    part = closing.windows.get(earlier, {}).get(name)
                    if part is not None:
                        sliding = merge(sliding, np.frombuffer(part, dtype="<f8"))
                thresholds = self.config.thresholds_for(None if kind == SCORE else column)
                now = compare(profile, tumbling, thresholds, self.config.min_samples)
                wide = compare(profile, sliding, thresholds, self.config.min_samples)
                record = {
                    **self._identity(model, int(version), role, kind, column, start),
                    **now.to_dict(),
                    "thresholds": thresholds.model_dump(),
                    "sliding": {
                        "window_start": _iso(start - (span - 1) * self.window_us),
                        **wide.to_dict(),
                    },
                }
                self._add(out, model, name.split("|", 1)[1], record)

    def _performance(
        self, out: Report, seen: Snapshot, closing: Closing, joined: JoinResult, performed: int
    ) -> None:
        pairs: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for start, stored in closing.pairs.items():
            for series, text in stored.items():
                pairs.setdefault((start, series), []).extend(parse_pairs(text))
        for key, new in joined.pairs.items():
            start, series = key
            if start < performed:
                pairs.setdefault(key, []).extend(new)
            else:  # reported in a later step: kept until then
                out.ops += [
                    ["happend", self.state.pairs_key(start), series, pairs_text(new)],
                    ["pexpire", self.state.pairs_key(start), str(self.state.ttl_ms)],
                    ["zadd", f"{self.state.prefix}:paired", str(start), str(start)],
                ]
        for start, series in sorted(pairs):
            if seen.performed is not None and start < seen.performed:
                continue
            model, version, role = series.split("|")
            reference = self.references.get(model, int(version))
            if reference is None or reference.objective is None:
                continue
            record = self._metrics(reference, role, start, pairs[(start, series)])
            self._add(out, model, f"{version}|{role}|{PERFORMANCE}|{record['column']}", record)
        for start in closing.pairs:
            out.ops += [
                ["del", self.state.pairs_key(start)],
                ["zrem", f"{self.state.prefix}:paired", str(start)],
            ]

    def _metrics(
        self, reference: Reference, role: str, start: int, pairs: list[tuple[float, float]]
    ) -> dict[str, Any]:
        primary = reference.primary_metric or ""
        validation = reference.metrics.get(primary)
        metrics = live_metrics(reference.objective, pairs) if reference.objective else None
        status, live = INSUFFICIENT, None
        if metrics is not None and len(pairs) >= self.config.min_labels:
            live = metrics.get(primary)
            status = OK
            if live is not None and validation is not None:
                tolerance = self.config.performance_tolerance
                worse = (
                    live < validation * (1 - tolerance)
                    if HIGHER_IS_BETTER.get(primary, True)
                    else live > validation * (1 + tolerance)
                )
                status = ALERT if worse else OK
        return {
            **self._identity(reference.model, reference.version, role, PERFORMANCE, primary, start),
            "labels": len(pairs),
            "metrics": metrics,
            "live": live,
            "validation": validation,
            "tolerance": self.config.performance_tolerance,
            "status": status,
        }

    def _identity(
        self, model: str, version: int, role: str, kind: str, column: str, start: int
    ) -> dict[str, Any]:
        return {
            "model": model,
            "version": version,
            "role": role,
            "kind": kind,
            "column": column,
            "window_start": _iso(start),
            "window_end": _iso(start + self.window_us),
        }

    def _add(self, out: Report, model: str, name: str, record: dict[str, Any]) -> None:
        out.records.append(record)
        out.latest[(model, name)] = record
        event = self.episodes.step(model, name, record, out.ops)
        if event is not None:
            out.events.append(event)


def _iso(micros: int) -> str:
    return from_us(micros).isoformat()


def _json(record: dict[str, Any]) -> str:
    return orjson.dumps(record).decode()
