"""Step 7: `fstore verify` on every view — online values read from Redis against the offline
computation over the Parquet log, at sampled (entity, time) points. Every value must agree,
distinct counts included (offline reproduces Redis's HyperLogLog)."""

from __future__ import annotations

from rich.console import Console

from demo.errors import DemoError
from demo.report import ViewCheck
from featurestore.config import Settings
from featurestore.registry import Registry
from featurestore.verify import verify_view

__all__ = ["verify_views"]

SAMPLE = 500  # entities per view


def verify_views(settings: Settings, console: Console) -> list[ViewCheck]:
    checks = []
    for entry in Registry(settings.registry).list_views():
        report = verify_view(settings, entry, sample=SAMPLE)
        check = ViewCheck(
            entry.name,
            report.points,
            sum(c.compared for c in report.checks),
            sum(c.mismatched for c in report.checks),
        )
        checks.append(check)
        console.print(
            f"{entry.name}@{entry.version}: {check.compared:,} values at {check.points:,} points, "
            f"{check.mismatches} mismatches"
        )
        wrong = [(c.feature, c.examples[:1]) for c in report.checks if c.mismatched]
        if wrong:
            raise DemoError(
                f"{entry.name}: {check.mismatches} online values differ from the offline "
                f"computation, e.g. {wrong[:3]}",
                "this is a bug: run the demo again with --keep-running, and report the output "
                f"of `FSTORE_CONFIG=<demo folder>/featurestore.yaml fstore verify {entry.name}`",
            )
    return checks
