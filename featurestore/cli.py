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

from featurestore import __version__
from featurestore.api_keys_cli import keys_app
from featurestore.config import load_settings, masked
from featurestore.errors import FeatureStoreError
from featurestore.on_demand import RegisteredOnDemand
from featurestore.registry import DB_FILE_NAME, Registry, Status
from featurestore.repo import load_repo
from featurestore.scaffold import TEMPLATES, init_repo
from featurestore.services.cli import services_app
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
app.add_typer(services_app, name="services")
app.add_typer(keys_app, name="keys")
console = Console()


def _print_version(show: bool) -> None:
    if show:
        console.print(f"fstore {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Streaming feature store and online inference service."""


@app.command("init")
def init(
    name: Annotated[Path, typer.Argument(help="Folder of the new repo (new or empty).")],
    template: Annotated[
        str, typer.Option(help=f"What to start from: {' or '.join(TEMPLATES)}.")
    ] = TEMPLATES[0],
) -> None:
    """Scaffold a feature repo: settings, an entity, a Kafka source, a view, a service."""
    for path in init_repo(name, template):
        console.print(f"[green]wrote[/] {path}", highlight=False)
    console.print(f"Next: cd {name} && fstore apply  (its README.md says what follows)")


@app.command("config")
def show_config() -> None:
    """Print the effective configuration (YAML file + FSTORE_* overrides), every password,
    token and SASL secret shown as ***."""
    console.print_json(data=masked(load_settings().model_dump(mode="json")))


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
    table = Table("kind", "name", "status", "version", "fingerprint", title=registry.db.shown)
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
    """List the registered feature views (version, fingerprint, source topic, features) and
    request-time features (version, fingerprint, inputs, typed outputs)."""
    config = load_settings().registry
    registry = Registry(config) if config.url or (config.path / DB_FILE_NAME).exists() else None
    registered = registry.list_views(all_versions) if registry else []
    on_demand = registry.list_on_demand(all_versions) if registry else []
    if not registered and not on_demand:
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
    if registered:
        console.print(table)
    if on_demand:
        console.print(_on_demand_table(on_demand))


def _on_demand_table(registered: list[RegisteredOnDemand]) -> Table:
    """Request-time features: each input (a request field and its type, or a pinned view
    feature) and each output with its type."""
    table = Table("request-time feature", "version", "fingerprint", "inputs", "outputs")
    table.columns[2].no_wrap = True
    table.columns[3].overflow = "fold"
    for entry in registered:
        feature = entry.feature
        inputs = [
            f"{source.name}.{field}: {kind}"
            for source in feature.request
            for field, kind in source.schema_.items()
        ]
        table.add_row(
            entry.name,
            f"v{entry.version}",
            entry.fingerprint,
            "\n".join(inputs + feature.features),
            "\n".join(f"{name}: {kind}" for name, kind in feature.outputs.items()),
        )
    return table


@app.command("remove")
def remove(
    view: Annotated[str, typer.Argument(help="Feature view name.")],
    version: Annotated[int, typer.Argument(help="The version to remove.")],
) -> None:
    """Remove an old view version from the registry; its online tiles expire by themselves,
    its lifetime states (which never do) are deleted."""
    settings = load_settings()
    registry = Registry(settings.registry)
    removed = registry.get_view(view, version)
    registry.remove_view(view, version)
    console.print(f"Removed {view} v{version}.")
    if removed.view.has_lifetime:
        from featurestore.online import OnlineStore

        store = OnlineStore(settings.redis)
        try:
            deleted = store.drop_lifetime(view, version)
        finally:
            store.close()
        console.print(f"Deleted {deleted} lifetime state keys of {view} v{version} from Redis.")


@app.command("history")
def history() -> None:
    """The feature registry's audit, oldest first: who applied or removed what, and when."""
    table = Table("id", "at (UTC)", "who", "action", "kind", "name", "version", "change")
    for row in Registry(load_settings().registry).history():
        version = "" if row.version is None else f"v{row.version}"
        table.add_row(
            str(row.id), row.at[:19], row.who, row.action, row.kind, row.name, version, row.detail
        )
    console.print(table)


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
