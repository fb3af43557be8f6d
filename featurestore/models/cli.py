"""`fstore train` and `fstore models ...`: train, inspect, promote and roll back models.

Registered on the `fstore` root through the `fstore.commands` entry point, as every command
package is. Errors are `FeatureStoreError`s, which `fstore`'s entry point prints and exits 1 on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from featurestore.config import load_settings
from featurestore.errors import RequestError
from featurestore.models.params import load_params
from featurestore.models.promotion import default_who
from featurestore.models.registry import (
    PRODUCTION,
    AuditEntry,
    ModelRegistry,
    ModelVersion,
    Objective,
)
from featurestore.models.train import train_model
from featurestore.offline.datasets import DatasetStore
from featurestore.offline.log import OfflineStore
from featurestore.registry import Registry

__all__ = ["models_app", "register"]

models_app = typer.Typer(help="The model registry: versions, lineage, aliases, traffic, history.")
console = Console()

Reason = Annotated[str, typer.Option("--reason", help="Why, for the audit history.")]


def register(app: typer.Typer) -> None:
    """Add the model commands to the `fstore` root (the `fstore.commands` entry point)."""
    app.command("train")(train)
    app.add_typer(models_app, name="models")


def train(
    dataset: Annotated[str, typer.Option(help="Dataset NAME or NAME@VERSION.")],
    model: Annotated[str, typer.Option(help="Model name; each training adds a version.")],
    label: Annotated[str, typer.Option(help="The label column of the dataset.")],
    params: Annotated[
        Path | None, typer.Option(help="LightGBM parameters, a YAML or JSON mapping.")
    ] = None,
    objective: Annotated[
        Objective | None, typer.Option(help="Default: binary when labels are 0/1.")
    ] = None,
    validation_fraction: Annotated[
        float, typer.Option(help="The newest rows (by time) that validate.")
    ] = 0.2,
    description: Annotated[str, typer.Option(help="A note kept with the version.")] = "",
) -> None:
    """Train LightGBM on a dataset (time-ordered split) and register the next model version."""
    settings = load_settings()
    version = train_model(
        DatasetStore(OfflineStore(settings.offline)).get(dataset),
        model,
        label,
        load_params(params) if params is not None else None,
        registry=Registry(settings.registry),
        models=ModelRegistry(settings.models),
        objective=objective,
        validation_fraction=validation_fraction,
        who=default_who(),
        description=description,
    )
    split = version.params.get("split", {})
    console.print(
        f"Registered {version.ref} ({version.objective}, {split.get('training_rows')} training / "
        f"{split.get('validation_rows')} validation rows, best iteration "
        f"{version.params.get('best_iteration')})"
    )
    console.print("validation " + _metrics_text(version))


@models_app.command("list")
def list_models() -> None:
    """Every model: versions, aliases and traffic."""
    registry = _registry()
    names = registry.models()
    if not names:
        console.print(f"No models in {registry.root}: train one with `fstore train`.")
        return
    table = Table("model", "versions", "aliases", "traffic", "latest", "primary metric")
    for name in names:
        versions = registry.versions(name)
        rollout = registry.rollout(name)
        latest = versions[-1]
        table.add_row(
            name,
            ", ".join(str(v.version) for v in versions),
            "\n".join(f"{alias} -> {number}" for alias, number in rollout.aliases.items()),
            "\n".join(f"{alias} {weight:.0%}" for alias, weight in rollout.traffic.items()),
            f"v{latest.version} {latest.created_at:%Y-%m-%d %H:%M} by {latest.created_by}",
            f"{latest.primary_metric} {latest.metrics[latest.primary_metric]:.4f}",
        )
    console.print(table)


@models_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="MODEL, MODEL@VERSION or MODEL@ALIAS.")],
) -> None:
    """A version's lineage: dataset, views, features, params, metrics, artifact, aliases.

    A bare MODEL shows its production version, or its newest when nothing is in production.
    """
    registry = _registry()
    name, _, which = ref.partition("@")
    if which:
        version = registry.get(name, which)
    else:
        production = registry.rollout(name).aliases.get(PRODUCTION)
        version = registry.get(name, production or registry.versions(name)[-1].version)
    aliases = [a for a, n in registry.rollout(name).aliases.items() if n == version.version]
    console.print(f"[bold]{version.ref}[/] {version.objective}, label {version.label!r}")
    console.print(f"aliases: {', '.join(aliases) or 'none'}")
    console.print(f"created {version.created_at.isoformat()} by {version.created_by}")
    if version.description:
        console.print(f"description: {version.description}")
    dataset = version.dataset
    console.print(
        f"dataset: {dataset.name}@{dataset.version} (content hash {dataset.content_hash})"
    )
    console.print(
        "views: " + ", ".join(f"{view}@{number}" for view, number in version.views.items())
    )
    console.print(f"entity keys: {', '.join(version.signature.entity_keys)}")
    if version.signature.service:
        console.print(f"feature service: {version.signature.service}")
    console.print("features: " + ", ".join(spec.ref for spec in version.signature.features))
    console.print(f"validation ({version.primary_metric} gates): " + _metrics_text(version))
    console.print(f"artifact: {version.artifact} sha256 {version.artifact_sha256}")
    console.print(
        "libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(version.libraries.items()))
    )
    console.print("params:")
    console.print_json(data=version.params)


@models_app.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="The version to promote.")],
    to: Annotated[str, typer.Option("--to", help="The alias to point at it.")] = PRODUCTION,
    force: Annotated[
        bool, typer.Option("--force", help="Pass the metric gate even if worse (needs --reason).")
    ] = False,
    reason: Reason = "",
    tolerance: Annotated[
        float, typer.Option(help="How much worse (absolute) the primary metric may be.")
    ] = 0.01,
) -> None:
    """Point an alias (production by default, metric-gated) at a version."""
    entry = _registry().set_alias(
        model, to, version, who=default_who(), reason=reason, force=force, tolerance=tolerance
    )
    _print_change(entry)


@models_app.command("alias")
def alias(
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. canary, shadow.")],
    version: Annotated[int, typer.Argument(help="The version it points at.")],
    reason: Reason = "",
) -> None:
    """Point any alias at a version (production stays gated: use `promote` to force)."""
    _print_change(
        _registry().set_alias(model, alias_name, version, who=default_who(), reason=reason)
    )


@models_app.command("unalias")
def unalias(
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="The alias to remove.")],
    reason: Reason = "",
) -> None:
    """Remove an alias (one that takes traffic must leave the traffic first)."""
    _print_change(_registry().remove_alias(model, alias_name, who=default_who(), reason=reason))


@models_app.command("rollback")
def rollback(
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Option("--alias", help="The alias to roll back.")] = (
        PRODUCTION
    ),
    reason: Reason = "",
) -> None:
    """Point an alias back at the version it held before its last change."""
    _print_change(_registry().rollback(model, alias_name, who=default_who(), reason=reason))


@models_app.command("traffic")
def traffic(
    model: Annotated[str, typer.Argument(help="Model name.")],
    weights: Annotated[
        list[str] | None,
        typer.Argument(help="ALIAS=WEIGHT pairs, e.g. production=90 canary=10 (normalised)."),
    ] = None,
    reason: Reason = "",
) -> None:
    """Split a model's traffic between aliases; with no weights, show the current split."""
    registry = _registry()
    if weights:
        registry.set_traffic(model, _parse_weights(weights), who=default_who(), reason=reason)
    rollout = registry.rollout(model)
    console.print(
        f"{model}: "
        + ", ".join(
            f"{alias} -> v{rollout.aliases.get(alias, '?')} {weight:.1%}"
            for alias, weight in rollout.traffic.items()
        )
    )


@models_app.command("history")
def history(
    model: Annotated[str | None, typer.Argument(help="Model name (default: all).")] = None,
) -> None:
    """The audit history, oldest first: who changed what, when, from, to, and why."""
    entries = _registry().history(model)
    if not entries:
        console.print("No changes recorded yet.")
        return
    table = Table("id", "at (UTC)", "model", "action", "alias", "from", "to", "who", "reason")
    for entry in entries:
        table.add_row(
            str(entry.id),
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.model,
            entry.action + (" (forced)" if entry.detail.get("forced") else ""),
            entry.alias or "",
            _number(entry.from_version),
            _number(entry.to_version) if entry.action != "traffic" else _traffic_text(entry),
            entry.who,
            entry.reason,
        )
    console.print(table)


def _parse_weights(pairs: list[str]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for pair in pairs:
        alias, sep, text = pair.partition("=")
        try:
            if not sep:
                raise ValueError(pair)
            weights[alias] = float(text)
        except ValueError:
            raise RequestError(
                f"traffic weight {pair!r} is not ALIAS=NUMBER, e.g. production=90"
            ) from None
    return weights


def _print_change(entry: AuditEntry) -> None:
    forced = " (forced past the gate)" if entry.detail.get("forced") else ""
    console.print(
        f"{entry.model}: {entry.alias} {_number(entry.from_version)} -> "
        f"{_number(entry.to_version)}{forced} [dim](audit entry {entry.id})[/]"
    )


def _metrics_text(version: ModelVersion) -> str:
    return ", ".join(f"{key} {value:.4f}" for key, value in version.metrics.items())


def _traffic_text(entry: AuditEntry) -> str:
    weights: dict[str, Any] = entry.detail.get("weights", {})
    return " ".join(f"{alias}={weight:.0%}" for alias, weight in weights.items())


def _number(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def _registry() -> ModelRegistry:
    return ModelRegistry(load_settings().models)
