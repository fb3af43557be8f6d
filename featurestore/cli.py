"""The `fstore` command line.

The root lives in the core package with the core's own commands (services, config, apply, views,
remove, dataset, verify, compact). Every command package adds its commands through the
`fstore.commands` entry-point group (see pyproject.toml), each with a `register(app)`:
`featurestore.models` (train, models), `streaming`, `serving` and `demo` alike, so the core never
imports the packages above it.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from featurestore.config import ServicesSettings, load_settings
from featurestore.errors import FeatureStoreError
from featurestore.registry import DB_FILE_NAME, Registry, Status
from featurestore.repo import load_repo
from featurestore.services import KafkaServer, RedisServer
from featurestore.services.redis_cluster import RedisCluster
from featurestore.timestamps import to_us

__all__ = [
    "app",
    "main",
]

app = typer.Typer(
    name="fstore",
    help="Streaming feature store and online inference service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(help="Run local Kafka and Redis servers (no Docker needed).")
app.add_typer(services_app, name="services")
console = Console()


@services_app.command("up")
def services_up(
    redis_cluster: Annotated[
        int,
        typer.Option(
            help="Start a Redis Cluster of this many masters (>= 3) instead of one Redis, on "
            "ports from services.redis_port; then set redis.cluster: true "
            "(FSTORE_REDIS_CLUSTER=true)."
        ),
    ] = 0,
    replicas: Annotated[
        int, typer.Option(help="With --redis-cluster: a replica per master (0 or 1).")
    ] = 0,
) -> None:
    """Start a local Kafka broker (KRaft) and Redis; reuse them when already running."""
    config = load_settings().services
    kafka = KafkaServer(config)
    with console.status(f"Starting Kafka {kafka.version} (first run downloads its jars)..."):
        started = kafka.start()
    console.print(
        f"Kafka {kafka.version} {'started' if started else 'already running'} at {kafka.bootstrap}"
    )
    if redis_cluster:
        cluster = RedisCluster(config.state_dir, config.redis_port, redis_cluster, replicas)
        with console.status(f"Starting a Redis Cluster of {redis_cluster} masters..."):
            started = cluster.start()
        console.print(
            f"Redis Cluster ({redis_cluster} masters, {replicas} replica each) "
            f"{'started' if started else 'already running'} at {cluster.url}; set "
            "FSTORE_REDIS_CLUSTER=true"
        )
        return
    redis = RedisServer(config)
    with console.status("Starting Redis..."):
        started = redis.start()
    console.print(f"Redis {'started' if started else 'already running'} at {redis.url}")


def _local_cluster(config: ServicesSettings) -> RedisCluster | None:
    """The local cluster `services up --redis-cluster` created under the state dir, if any."""
    home = config.state_dir / "redis-cluster"
    ports = sorted(int(p.name) for p in home.glob("*") if p.is_dir() and p.name.isdigit())
    if not ports:
        return None
    masters = len(ports)
    replicas = 0
    if masters >= 6 and masters % 2 == 0:
        masters, replicas = masters // 2, 1
    return RedisCluster(config.state_dir, ports[0], masters, replicas)


@services_app.command("down")
def services_down() -> None:
    """Stop the servers that `fstore services up` started (found by pid file only)."""
    config = load_settings().services
    cluster = _local_cluster(config)
    if cluster is not None and cluster.stop():
        console.print("Redis Cluster stopped")
    for name, server in (("Redis", RedisServer(config)), ("Kafka", KafkaServer(config))):
        with console.status(f"Stopping {name}..."):
            stopped = server.stop()
        console.print(f"{name} {'stopped' if stopped else 'was not running'}")


@services_app.command("status")
def services_status() -> None:
    """Show what runs where."""
    config = load_settings().services
    kafka, redis = KafkaServer(config).status(), RedisServer(config).status()
    table = Table("service", "state", "pid", "address", "version", "data", "log")
    for name, status, address, version in (
        ("kafka", kafka, kafka.bootstrap, kafka.version),
        ("redis", redis, redis.url, redis.version or "?"),
    ):
        state = "[green]running[/]" if status.running else "[red]stopped[/]"
        pid = str(status.pid) if status.pid else "-"
        table.add_row(
            name, state, pid, address, version, str(status.data_dir), str(status.log_file)
        )
    cluster = _local_cluster(config)
    if cluster is not None:
        for node, node_pid in zip(cluster.nodes, cluster.running(), strict=True):
            state = "[green]running[/]" if node_pid else "[red]stopped[/]"
            version = redis.version or "?"
            table.add_row(
                f"redis-cluster {node.port}",
                state,
                str(node_pid or "-"),
                node.url,
                version,
                str(node.home),
                str(node.log_file),
            )
    console.print(table)


@app.command("config")
def show_config() -> None:
    """Print the effective configuration (YAML file + FSTORE_* overrides)."""
    console.print_json(load_settings().model_dump_json())


_STATUS_STYLE = {
    Status.CREATED: "[green]created[/]",
    Status.UPDATED: "[yellow]updated[/]",
    Status.METADATA: "[cyan]metadata updated[/]",
    Status.UNCHANGED: "[dim]unchanged[/]",
}


@app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="Feature repo folder, or one .py file.")] = Path("."),
) -> None:
    """Register a feature repo: a view whose computation changed gets a new version."""
    contents = load_repo(path)
    registry = Registry(load_settings().registry)
    result = registry.apply(contents)
    if not result.changes:
        console.print(f"No definitions found in {path}.")
        return
    table = Table("kind", "name", "status", "version", "fingerprint", title=str(registry.path))
    for change in result.changes:
        version = "" if change.version is None else f"v{change.version}"
        table.add_row(
            change.kind, change.name, _STATUS_STYLE[change.status], version, change.fingerprint
        )
    console.print(table)


@app.command("views")
def views(
    all_versions: Annotated[
        bool, typer.Option("--all", help="Also list older versions that are still readable.")
    ] = False,
) -> None:
    """List the registered feature views: version, fingerprint, source topic, features."""
    config = load_settings().registry
    registered = (
        Registry(config).list_views(all_versions) if (config.path / DB_FILE_NAME).exists() else []
    )
    if not registered:
        console.print("No feature views registered: run `fstore apply` in a feature repo.")
        return
    table = Table("view", "version", "fingerprint", "topic", "features")
    table.columns[2].no_wrap = True
    table.columns[4].overflow = "fold"
    for entry in registered:
        table.add_row(
            entry.name,
            f"v{entry.version}",
            entry.fingerprint,
            entry.view.source.topic,
            "\n".join(entry.view.feature_names()),
        )
    console.print(table)


@app.command("remove")
def remove(
    view: Annotated[str, typer.Argument(help="Feature view name.")],
    version: Annotated[int, typer.Argument(help="The version to remove.")],
) -> None:
    """Remove an old view version from the registry; its online keys expire by themselves."""
    Registry(load_settings().registry).remove_view(view, version)
    console.print(f"Removed {view} v{version}.")


dataset_app = typer.Typer(help="Versioned, reproducible training datasets.")
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("create")
def dataset_create(
    name: Annotated[str, typer.Argument(help="Dataset name; each create adds a version.")],
    entities: Annotated[
        Path, typer.Option(help="Parquet file of entity rows: join keys, timestamp, labels.")
    ],
    service: Annotated[str | None, typer.Option(help="Feature service to compute.")] = None,
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="Feature ref view:feature (repeat).")
    ] = None,
    timestamp_column: Annotated[str, typer.Option(help="Row time column.")] = "event_timestamp",
) -> None:
    """Compute point-in-time features for every entity row and store them with a manifest."""
    from featurestore.store import FeatureStore

    dataset = FeatureStore().create_dataset(
        name, entities, features=feature, service=service, timestamp_column=timestamp_column
    )
    console.print(
        f"Created {dataset.ref}: {dataset.manifest['row_count']:,} rows at {dataset.path}\n"
        f"content hash {dataset.manifest['content_hash']}"
    )
    _print_quarantined(dataset.manifest.get("quarantined", []))


@dataset_app.command("list")
def dataset_list() -> None:
    """List datasets and their versions."""
    from featurestore.store import FeatureStore

    table = Table("dataset", "rows", "features", "created", "content hash")
    for dataset in FeatureStore().datasets.all():
        manifest = dataset.manifest
        table.add_row(
            dataset.ref,
            f"{manifest['row_count']:,}",
            str(len(manifest["features"])),
            manifest["created_at"],
            manifest["content_hash"][:16],
        )
    console.print(table)


@dataset_app.command("show")
def dataset_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")],
) -> None:
    """Print a dataset's manifest."""
    from featurestore.store import FeatureStore

    dataset = FeatureStore().datasets.get(ref)
    console.print(f"{dataset.path}")
    console.print_json(data=dataset.manifest)


@app.command("verify")
def verify(
    view: Annotated[str, typer.Argument(help="Feature view to check.")],
    version: Annotated[int | None, typer.Option(help="View version (default: latest).")] = None,
    sample: Annotated[int, typer.Option(help="Entities to sample.")] = 1000,
    as_of: Annotated[
        datetime | None,
        typer.Option(help="Read time in UTC, e.g. 2026-01-01T12:00:00 (default: newest event)."),
    ] = None,
    max_mismatch_rate: Annotated[
        float, typer.Option(help="Exit 1 when the mismatch rate is above this.")
    ] = 0.0,
) -> None:
    """Compare online values with the offline computation at sampled (entity, time) points."""
    from featurestore.verify import verify_view

    settings = load_settings()
    registered = Registry(settings.registry).get_view(view, version)
    when = None
    if as_of is not None:
        when = to_us(as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC))
    report = verify_view(settings, registered, sample=sample, as_of_us=when)
    table = Table(
        "feature",
        "compared",
        "mismatched",
        "rate",
        "max abs diff",
        "max rel diff",
        title=f"{report.view}@{report.version}: {report.points} points",
    )
    for check in report.checks:
        table.add_row(
            check.feature,
            str(check.compared),
            str(check.mismatched),
            f"{check.mismatch_rate:.4%}",
            f"{check.max_abs_diff:.3g}",
            f"{check.max_rel_diff:.3g}",
        )
    console.print(table)
    _print_quarantined(report.quarantined)
    for check in report.checks:
        for example in check.examples:
            console.print(f"[red]{check.feature}[/] {example}")
    if report.mismatch_rate > max_mismatch_rate:
        console.print(f"[red]mismatch rate {report.mismatch_rate:.4%} > {max_mismatch_rate:.4%}[/]")
        raise typer.Exit(1)
    console.print(f"[green]mismatch rate {report.mismatch_rate:.4%}[/]")


@app.command("compact")
def compact(
    view: Annotated[str, typer.Argument(help="Feature view whose offline log to compact.")],
    version: Annotated[int | None, typer.Option(help="View version (default: latest).")] = None,
    min_files: Annotated[
        int, typer.Option(help="Merge a date partition holding at least this many files.")
    ] = 2,
    include_today: Annotated[
        bool, typer.Option(help="Also dates from today (UTC) on, which appends still reach.")
    ] = False,
) -> None:
    """Merge the small files of each date partition of a view's offline log into one.

    Query results never change: the merged file is written durably before its inputs go.
    """
    from featurestore.offline.compaction import compact_view
    from featurestore.offline.log import OfflineStore

    settings = load_settings()
    if version is None:
        version = Registry(settings.registry).get_view(view).version
    before = None if include_today else datetime.now(UTC).date()
    report = compact_view(
        OfflineStore(settings.offline), view, version, min_files=min_files, before=before
    )
    for orphan in report.orphans_removed:
        console.print(f"[yellow]removed[/] {orphan} (left by a write that never finished)")
    _print_quarantined([str(q) for q in report.quarantined])
    if not report.compacted:
        when = "" if include_today else " before today (UTC)"
        console.print(f"{view}@{version}: no date{when} holds {max(2, min_files)}+ files.")
        return
    table = Table("date", "files merged", "events", "file", title=f"{view}@{version}")
    for done in report.compacted:
        table.add_row(done.date, str(done.files), f"{done.rows:,}", done.path.name)
    console.print(table)


def _print_quarantined(moved: list[str]) -> None:
    for line in moved:
        console.print(f"[yellow]quarantined unreadable log file[/] {line}", highlight=False)


_loaded: set[str] = set()  # the entry points already registered on `app`


def _load_plugins() -> None:
    """Register the commands of every `fstore.commands` entry point on `app` (once each)."""
    for entry_point in entry_points(group="fstore.commands"):
        if entry_point.name in _loaded:
            continue
        register = entry_point.load()
        register(app)
        _loaded.add(entry_point.name)


def main() -> None:
    _load_plugins()
    try:
        app()
    except FeatureStoreError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
