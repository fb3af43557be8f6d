"""Step 8: one window of normal traffic, then one where every amount is three times larger, and
the drift monitor's verdict on each (its drift records and alert events, read from Kafka).

Windows are tumbling windows of the requests' wall time (the prediction log's `at`), so the
traffic is timed to them: the normal window starts on a boundary, the shifted one right after,
and one more request after the shifted window's end (plus the allowed lateness) moves the
monitor's watermark past it, which closes it. The normal window's labels are published as it
ends, so the monitor can also join them and report the live metric of that window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from demo.data import Transactions
from demo.errors import DemoError
from demo.live import LiveStream, now_us
from demo.report import DriftResult
from demo.topics import TopicReader
from demo.traffic import ScoringClient, send_until
from demo.workspace import Workspace
from featurestore.timestamps import from_us, to_us

__all__ = ["AMOUNT_FACTOR", "DriftScenario"]

AMOUNT_FACTOR = 3.0
_US = 1_000_000
_REPORT_TIMEOUT_S = 60.0


@dataclass
class DriftScenario:
    workspace: Workspace
    live: LiveStream
    normal: Transactions  # the live batch already scored (its traffic is the normal window's)
    connect: Callable[[], ScoringClient]
    console: Console

    def run(self) -> DriftResult:
        monitor = self.workspace.settings.monitor
        window = monitor.window_us
        rows = LiveStream.rows(self.normal, self.live.rng)
        scorer = self.connect()
        drift_reader = TopicReader(self.workspace.settings.kafka, self.workspace.topics.drift)
        alert_reader = TopicReader(self.workspace.settings.kafka, self.workspace.topics.alerts)
        try:
            normal_start = _next_boundary(now_us(), window)
            self.console.print(
                f"Normal traffic in the window from {_clock(normal_start)} "
                f"({monitor.window} windows)"
            )
            _sleep_until(normal_start)
            _check(send_until(scorer, rows, (normal_start + window) / _US - 0.05).errors)
            self.live.publish_labels(self.normal)
            with self.console.status(f"Publishing transactions with amounts x{AMOUNT_FACTOR:g}"):
                shifted = self.live.next_batch(AMOUNT_FACTOR, apart_from=self.normal)
            shifted_start = _next_boundary(now_us(), window)
            if now_us() < shifted_start - window * 6 // 10:
                shifted_start -= window  # most of the current window is left: use it
            shifted_end = shifted_start + window
            self.console.print(
                f"Amounts x{AMOUNT_FACTOR:g} in the window from {_clock(shifted_start)}"
            )
            shifted_rows = LiveStream.rows(shifted, self.live.rng)
            _sleep_until(shifted_start)
            _check(send_until(scorer, shifted_rows, shifted_end / _US - 0.05).errors)
            # A request after the window's end and the lateness moves the watermark past both.
            _sleep_until(shifted_end + monitor.lateness_us + _US // 5)
            _check(send_until(scorer, shifted_rows, time.time() + 0.2).errors)
            with self.console.status("Waiting for the monitor to close the windows"):
                records, alerts = _collect(drift_reader, alert_reader, shifted_start)
        finally:
            scorer.close()
            drift_reader.close()
            alert_reader.close()
        result = _result(records, alerts, normal_start, shifted_start)
        kept = self.workspace.root / "drift.json"
        kept.write_bytes(orjson.dumps({"records": records, "alerts": alerts}))
        self.console.print(f"The monitor's records and alert events of the run: {kept}")
        self.console.print(_table(result))
        if not any("amount" in event["column"] for event in result.alerts):
            raise DemoError(
                f"the monitor raised no alert on an amount feature for the window with amounts "
                f"x{AMOUNT_FACTOR:g} (alerts on: {[e['column'] for e in result.alerts] or 'none'})",
                "read the monitor's log (logs/monitor.log in the demo folder)",
            )
        return result


def _collect(
    drift: TopicReader, alerts: TopicReader, shifted_start: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drift records and alert events until the shifted window's records have come."""
    records: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + _REPORT_TIMEOUT_S
    while not any(_start(r) == shifted_start for r in records):
        if time.monotonic() > deadline:
            raise DemoError(
                f"the monitor reported no drift for the window from {_clock(shifted_start)} "
                f"within {_REPORT_TIMEOUT_S:.0f}s",
                "read the monitor's log (logs/monitor.log in the demo folder)",
            )
        records.extend(drift.poll())
    # A closing sends its alert events with its records: wait until every column alerting in
    # the shifted window has an open episode (its newest event is an alert; one partition).
    wanted = {_column(r) for r in records if _start(r) == shifted_start and _alerting(r)}
    while not wanted <= set(_open_episodes(events)) and time.monotonic() < deadline:
        events.extend(alerts.poll())
    return records, events


def _column(record: dict[str, Any]) -> tuple[str, str]:
    return record["kind"], record["column"]


def _alerting(record: dict[str, Any]) -> bool:
    return record.get("role") == "served" and record.get("status") == "alert"


def _open_episodes(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, column) -> the alert event of its open episode (served role)."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        if event.get("role") == "served":
            newest[_column(event)] = event
    return {key: event for key, event in newest.items() if event["event"] == "alert"}


def _result(
    records: list[dict[str, Any]], events: list[dict[str, Any]], normal: int, shifted: int
) -> DriftResult:
    result = DriftResult(
        shift=f"amounts x{AMOUNT_FACTOR:g}",
        baseline_window=_clock(normal),
        shifted_window=_clock(shifted),
    )
    for record in records:
        if record.get("role") != "served":
            continue
        if record["kind"] == "performance":
            if _start(record) == normal:
                result.performance = record
            continue
        name = record["column"] if record["kind"] == "feature" else f"({record['kind']})"
        before, after = result.columns.get(name, (None, None))
        if _start(record) == normal:
            before = record
        elif _start(record) == shifted:
            after = record
        result.columns[name] = (before, after)
    alerting = {_column(r) for r in records if _start(r) == shifted and _alerting(r)}
    result.alerts = [e for key, e in _open_episodes(events).items() if key in alerting]
    result.earlier_alerts = [
        e for e in events if e["event"] == "alert" and _us(e["since"]) < shifted
    ]
    return result


def _table(result: DriftResult) -> Table:
    table = Table(
        "model input",
        f"normal, from {result.baseline_window}",
        f"{result.shift}, from {result.shifted_window}",
        title="Drift against the training profile (PSI, status)",
    )
    for name, (before, after) in sorted(result.columns.items()):
        table.add_row(name, _cell(before), _cell(after))
    return table


def _cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "-"
    psi, status = record.get("psi"), record.get("status", "?")
    style = {"alert": "bold red", "warn": "yellow", "ok": "green"}.get(status, "dim")
    value = f"{psi:.2f}" if isinstance(psi, int | float) else "-"
    return f"{value} [{style}]{status}[/]"


def _check(errors: list[str]) -> None:
    if errors:
        raise DemoError(
            f"{len(errors)} scoring requests failed, e.g. {errors[0]}",
            "read the server's log (logs/server.log in the demo folder)",
        )


def _start(record: dict[str, Any]) -> int:
    return _us(record["window_start"])


def _us(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


def _next_boundary(at_us: int, window_us: int) -> int:
    return (at_us // window_us + 1) * window_us


def _sleep_until(at_us: int) -> None:
    delay = (at_us - now_us()) / _US
    if delay > 0:
        time.sleep(delay)


def _clock(at_us: int) -> str:
    return from_us(at_us).strftime("%H:%M:%S")
