"""Commands the streaming package adds to `fstore` (through the `fstore.commands` entry point)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from featurestore.config import load_settings
from featurestore.redis_client import check_eviction_policy
from featurestore.registry import Registry
from streaming.errors import StreamingError
from streaming.ingest.backfill import backfill_from_log, backfill_from_topic
from streaming.ingest.importer import import_events
from streaming.ingest.metrics import WorkerCollector
from streaming.ingest.worker import Worker
from streaming.metrics import serve_metrics
from streaming.monitor.metrics import MonitorCollector
from streaming.monitor.monitor import Monitor

__all__ = ["backfill", "import_file", "ingest", "monitor", "register"]

console = Console()

# Options the two consumer-group commands (ingest, monitor) share.
BatchSize = Annotated[int, typer.Option(help="Messages per batch.")]
InstanceId = Annotated[
    str | None,
    typer.Option(help="Stable id of this worker in the group: a restart resumes at once."),
]
MetricsPort = Annotated[int, typer.Option(help="Prometheus /metrics port (0: off).")]
MetricsHost = Annotated[str, typer.Option(help="Address /metrics listens on.")]


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("backfill")(backfill)
    app.command("import")(import_file)
    app.command("monitor")(monitor)


def ingest(
    view: Annotated[
        list[str] | None, typer.Option("--view", help="Views to compute (default: all).")
    ] = None,
    group: Annotated[str, typer.Option(help="Kafka consumer group.")] = "fstore-ingest",
    batch_size: BatchSize = 20_000,
    poll_timeout: Annotated[
        float, typer.Option(help="Seconds a batch waits to fill: lower is fresher.")
    ] = 0.05,
    instance_id: InstanceId = None,
    metrics_port: MetricsPort = 0,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Run an ingest worker: Kafka -> windowed features in Redis + events in Parquet.

    Start several with the same --group to split the partitions between them.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    check_eviction_policy(settings.redis)  # a Redis that may evict tiles is refused
    registry = Registry(settings.registry)
    registered = registry.list_views()
    if view:
        unknown = sorted(set(view) - {r.name for r in registered})
        if unknown:
            raise StreamingError(
                f"unknown views {unknown}; registered: {[r.name for r in registered]}"
            )
        registered = [r for r in registered if r.name in view]
    worker = Worker(
        settings,
        [(r.view, r.version) for r in registered],
        group=group,
        batch_size=batch_size,
        poll_timeout=poll_timeout,
        instance_id=instance_id,
    )
    serve_metrics(WorkerCollector(worker), metrics_port, metrics_host)
    names = ", ".join(f"{r.name}@{r.version}" for r in registered)
    console.print(f"Ingesting {names} from {sorted(worker.views)} (group {group})")
    worker.run()
    console.print(f"Stopped after {worker.counters.consumed:,} events: {worker.counters}")


def backfill(
    view: Annotated[str, typer.Argument(help="The feature view to rebuild.")],
    version: Annotated[
        int | None, typer.Option(help="The version to build (default: the latest).")
    ] = None,
    from_log: Annotated[
        int | None,
        typer.Option(help="Read the offline log of this version instead of replaying the topic."),
    ] = None,
) -> None:
    """Build a view version's online state from history: the topic from its start, or a log."""
    settings = load_settings()
    check_eviction_policy(settings.redis)
    target = Registry(settings.registry).get_view(view, version)
    if from_log is None:
        console.print(f"Replaying {target.view.source.topic} into {target.name}@{target.version}")
        counters = backfill_from_topic(settings, target)
    else:
        console.print(f"Rebuilding {target.name}@{target.version} from the log of v{from_log}")
        counters = backfill_from_log(settings, target, from_log)
    console.print(
        f"Applied {counters.applied:,} events ({counters.late:,} late) to "
        f"{target.name}@{target.version}"
    )


def import_file(
    view: Annotated[str, typer.Argument(help="The feature view whose history this is.")],
    path: Annotated[Path, typer.Argument(help="A .parquet or .csv file of source events.")],
    version: Annotated[int | None, typer.Option(help="View version (default: latest).")] = None,
    online: Annotated[bool, typer.Option(help="Also merge the events into Redis.")] = False,
    rejects: Annotated[
        Path | None, typer.Option(help="Write every rejected row number and reason here (CSV).")
    ] = None,
) -> None:
    """Load historical events that never went through Kafka into a view's offline log."""
    settings = load_settings()
    if online:
        check_eviction_policy(settings.redis)
    target = Registry(settings.registry).get_view(view, version)
    report = import_events(settings, target, path, online=online)
    console.print(
        f"Imported {report.imported:,} of {report.read:,} rows into {target.name}@{target.version}"
        + (" (offline log and online state)" if online else " (offline log)")
    )
    if report.rejected:
        console.print(f"[yellow]Rejected {len(report.rejected):,} rows[/], for example:")
        for row, reason in report.rejected[:10]:
            console.print(f"  row {row}: {reason}")
        if rejects is not None:
            rejects.write_text(
                "row,reason\n" + "".join(f'{row},"{reason}"\n' for row, reason in report.rejected)
            )
            console.print(f"All rejected rows: {rejects}")


def monitor(
    watch: Annotated[
        str | None,
        typer.Option(help="Watch this feature view's source topic instead of the prediction log."),
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="Kafka consumer group (default: fstore-monitor[-VIEW]).")
    ] = None,
    batch_size: BatchSize = 20_000,
    instance_id: InstanceId = None,
    metrics_port: MetricsPort = 0,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Run the drift monitor: windowed drift of every served model's features and scores
    against its training profile, live metrics from delayed labels, and alerts.

    Settings: the `monitor` section (topics, window, thresholds, webhook, command).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    check_eviction_policy(settings.redis)  # its windows' state lives in Redis too
    watched = Registry(settings.registry).get_view(watch) if watch else None
    worker = Monitor(
        settings,
        group=group or ("fstore-monitor" + (f"-{watch}" if watch else "")),
        batch_size=batch_size,
        instance_id=instance_id,
        watch=watched,
    )
    serve_metrics(MonitorCollector(worker), metrics_port, metrics_host)
    what = f"source topic {worker.topic} of view {watch}" if watch else f"{worker.topic}"
    console.print(
        f"Monitoring {what} (group {worker.group}), windows of {settings.monitor.window}; "
        f"drift to {settings.monitor.drift_topic}, alerts to {settings.monitor.alerts_topic}"
    )
    worker.run()
    console.print(f"Stopped: {worker.counters}")
