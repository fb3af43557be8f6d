"""Commands the streaming package adds to `fstore` (through the `fstore.commands` entry point)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from featurestore.config import load_settings
from featurestore.registry import Registry
from streaming.backfill import backfill_from_log, backfill_from_topic
from streaming.demo import demo
from streaming.errors import StreamingError
from streaming.metrics import serve_metrics
from streaming.worker import Worker

console = Console()


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("backfill")(backfill)
    app.command("demo")(demo)


def ingest(
    view: Annotated[
        list[str] | None, typer.Option("--view", help="Views to compute (default: all).")
    ] = None,
    group: Annotated[str, typer.Option(help="Kafka consumer group.")] = "fstore-ingest",
    batch_size: Annotated[int, typer.Option(help="Messages per batch.")] = 20_000,
    instance_id: Annotated[
        str | None,
        typer.Option(help="Stable id of this worker in the group: a restart resumes at once."),
    ] = None,
    metrics_port: Annotated[int, typer.Option(help="Prometheus /metrics port (0: off).")] = 0,
    metrics_host: Annotated[str, typer.Option(help="Address /metrics listens on.")] = "127.0.0.1",
) -> None:
    """Run an ingest worker: Kafka -> windowed features in Redis + events in Parquet.

    Start several with the same --group to split the partitions between them.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
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
        instance_id=instance_id,
    )
    serve_metrics(worker, metrics_port, metrics_host)
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
