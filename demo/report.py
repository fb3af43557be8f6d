"""What a demo run measured, and the summary table it ends with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from demo.traffic import LoadResult
from demo.training import Comparison

__all__ = ["DriftResult", "Results", "ViewCheck", "print_summary", "summary_json"]


@dataclass
class ViewCheck:
    """`fstore verify` of one view: every value must match, distinct counts included."""

    view: str
    points: int
    compared: int
    mismatches: int


@dataclass
class DriftResult:
    shift: str = ""  # what was shifted
    baseline_window: str = ""
    shifted_window: str = ""
    # column -> (baseline record, shifted record), from the monitor's drift topic
    columns: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = field(
        default_factory=dict
    )
    # The open alert episodes (their alert events) of the columns alerting in the shifted window
    alerts: list[dict[str, Any]] = field(default_factory=list)
    earlier_alerts: list[dict[str, Any]] = field(default_factory=list)  # opened before it
    performance: dict[str, Any] | None = None  # live metric from the delayed labels


@dataclass
class Results:
    events: int = 0
    fraud_events: int = 0
    publish_seconds: float = 0.0
    ingested: int = 0
    ingest_seconds: float = 0.0
    views: int = 0
    dataset: str = ""
    training_rows: int = 0
    training_fraud: int = 0
    model: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    validation_rows: int = 0
    comparison: Comparison | None = None  # holdout AUC without and with the added features
    load: LoadResult = field(default_factory=LoadResult)
    verify: list[ViewCheck] = field(default_factory=list)
    drift: DriftResult = field(default_factory=DriftResult)
    base_url: str = ""
    dashboard: bool = False  # whether the server answers /ui

    @property
    def ingest_rate(self) -> float:
        return self.ingested / self.ingest_seconds if self.ingest_seconds else 0.0


def print_summary(console: Console, results: Results) -> None:
    table = Table("", "result", title="fstore demo: summary", title_style="bold", show_lines=True)
    table.add_row(
        "events",
        f"{results.events:,} card transactions ({results.fraud_events:,} in fraud bursts), "
        f"published in {results.publish_seconds:.1f}s",
    )
    table.add_row(
        "ingestion",
        f"{results.ingested:,} events in {results.ingest_seconds:.1f}s: "
        f"[bold]{results.ingest_rate:,.0f} events/s[/] into Redis and Parquet "
        f"({results.views} views)",
    )
    table.add_row(
        "training set",
        f"{results.dataset}: {results.training_rows:,} point-in-time rows, "
        f"{results.training_fraud:,} fraud",
    )
    auc = results.metrics.get("auc", float("nan"))
    table.add_row(
        "model",
        f"{results.model} (production): holdout [bold]AUC {auc:.3f}[/], "
        f"PR-AUC {results.metrics.get('pr_auc', float('nan')):.3f} "
        f"on {results.validation_rows:,} later rows",
    )
    comparison = results.comparison
    if comparison is not None:
        table.add_row("with / without", comparison.describe())
    load = results.load
    table.add_row(
        "scoring",
        f"{load.requests:,} requests from {load.clients} clients: "
        f"[bold]{load.per_second:,.0f} req/s[/], "
        f"latency p50 [bold]{load.percentile(50):.1f} ms[/], "
        f"p99 [bold]{load.percentile(99):.1f} ms[/] (client side, 1 row each), "
        f"{len(load.errors)} errors",
    )
    table.add_row(
        "online = offline",
        "\n".join(
            f"{check.view}: {check.mismatches} mismatches in {check.compared:,} values at "
            f"{check.points:,} points"
            for check in results.verify
        ),
    )
    table.add_row("drift", _drift_text(results.drift))
    performance = results.drift.performance
    if performance is not None:
        table.add_row("live metric", _performance_text(performance))
    base = results.base_url
    table.add_row(
        "look around",
        "while it runs (--keep-running keeps it up):\n"
        f"API docs {base}/docs\n"
        + (f"dashboard {base}/ui\n" if results.dashboard else "dashboard: not in this build\n")
        + f"metrics {base}/metrics",
    )
    console.print(table)


def summary_json(results: Results) -> bytes:
    """The summary's figures as JSON (`summary.json` in the demo folder), for scripts and CI."""
    load, drift = results.load, results.drift
    return orjson.dumps(
        {
            "events": results.events,
            "fraud_events": results.fraud_events,
            "ingested": results.ingested,
            "ingest_events_per_s": results.ingest_rate,
            "dataset": results.dataset,
            "training_rows": results.training_rows,
            "model": results.model,
            "metrics": results.metrics,
            "with_without": None
            if results.comparison is None
            else _comparison_json(results.comparison),
            "scoring": {
                "requests": load.requests,
                "errors": len(load.errors),
                "per_s": load.per_second,
                "p50_ms": load.percentile(50),
                "p99_ms": load.percentile(99),
            },
            "verify": [asdict(check) for check in results.verify],
            "drift": {
                "shift": drift.shift,
                "alerts": [f"{e['kind']}:{e['column']}" for e in drift.alerts],
                "alerts_before_shift": len(drift.earlier_alerts),
                "live_metric": None if drift.performance is None else drift.performance["live"],
            },
            "urls": {"docs": f"{results.base_url}/docs", "ui": f"{results.base_url}/ui"},
        },
        option=orjson.OPT_INDENT_2,
    )


def _drift_text(drift: DriftResult) -> str:
    if not drift.alerts:
        return "no alert"

    def psi(event: dict[str, Any]) -> float:
        name = event["column"] if event["kind"] == "feature" else f"({event['kind']})"
        shifted = drift.columns.get(name, (None, None))[1] or {}
        return float(shifted.get("psi") or 0.0)

    ranked = sorted(drift.alerts, key=psi, reverse=True)
    amounts = [e for e in drift.alerts if "amount" in e["column"]]
    others = [e["column"] for e in drift.alerts if e not in amounts and e["kind"] == "feature"]
    score = any(e["kind"] == "score" for e in drift.alerts)
    normal = sum(
        1 for before, _ in drift.columns.values() if before and before["status"] == "alert"
    )
    lines = [
        f"{drift.shift} from {drift.shifted_window}: [bold red]ALERT[/] on "
        f"{len(amounts)} amount features" + (" and the score" if score else ""),
        "strongest: " + ", ".join(f"{e['column']} (PSI {psi(e):.2f})" for e in ranked[:3]),
    ]
    if others:
        lines.append(f"also: {', '.join(others)}")
    lines.append(f"normal traffic from {drift.baseline_window}: {normal} alerts")
    return "\n".join(lines)


def _performance_text(record: dict[str, Any]) -> str:
    """The monitor's live metric of the normal window, from the labels published after it."""
    labels, metric = record.get("labels", 0), record["column"]
    if record.get("live") is None:
        return (
            f"{labels} delayed labels joined to their predictions; live {metric} not computed "
            "(too few labels, or all of one class: a few minutes of traffic may hold no fraud)"
        )
    return (
        f"live {metric} [bold]{record['live']:.3f}[/] from {labels} delayed labels "
        f"(validation {record['validation']:.3f}): {record['status']}"
    )


def _comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "added": comparison.added,
        "without": {"model": comparison.without.ref, **comparison.without.metrics},
        "with": {"model": comparison.with_added.ref, **comparison.with_added.metrics},
    }
