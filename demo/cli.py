"""`fstore demo`: the whole product end to end on real services (registered through the
`fstore.commands` entry point)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from demo.errors import DemoError
from demo.options import DemoOptions
from demo.stepper import StepFailed
from demo.steps import DemoRun

__all__ = ["demo", "register"]

_DEFAULTS = DemoOptions()
QUICK_USERS = 5_000


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    data_dir: Annotated[
        Path, typer.Option(help="The demo's own folder (registry, data, models, logs).")
    ] = _DEFAULTS.data_dir,
    keep_running: Annotated[
        bool,
        typer.Option(help="Keep the server, worker and monitor up until Ctrl-C; keep the data."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic stream.")] = _DEFAULTS.seed,
    users: Annotated[int, typer.Option(help="Card holders.")] = _DEFAULTS.users,
    merchants: Annotated[int, typer.Option(help="Merchants.")] = _DEFAULTS.merchants,
    hours: Annotated[
        float, typer.Option(help="Hours of history; the first 24 fill the 24 h windows.")
    ] = _DEFAULTS.hours,
    requests: Annotated[int, typer.Option(help="Scoring requests of the load test.")] = (
        _DEFAULTS.requests
    ),
    clients: Annotated[int, typer.Option(help="Concurrent clients of the load test.")] = (
        _DEFAULTS.clients
    ),
    window_seconds: Annotated[int, typer.Option(help="The drift monitor's window.")] = (
        _DEFAULTS.window_s
    ),
    min_auc: Annotated[
        float, typer.Option(help="Fail unless the model's holdout AUC is above this.")
    ] = _DEFAULTS.min_auc,
    repo: Annotated[
        Path | None,
        typer.Option(help="The feature repo (default: the fraud example the package ships)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the scoring API listens on.")] = (
        _DEFAULTS.host
    ),
    port: Annotated[int, typer.Option(help="Its port (0: any free one).")] = _DEFAULTS.port,
    quick: Annotated[
        bool,
        typer.Option(help="A smaller run (5,000 users, 26 h, 1,000 requests), as CI runs it."),
    ] = False,
) -> None:
    """Run the whole product on real Kafka and Redis: a feature repo, a stream with planted
    fraud, ingestion, a point-in-time training set, a LightGBM model, serving, the
    online/offline check and the drift monitor — then a summary."""
    options = DemoOptions(
        data_dir=data_dir,
        repo=repo,
        seed=seed,
        users=QUICK_USERS if quick else users,
        merchants=merchants,
        hours=26.0 if quick else hours,
        requests=1_000 if quick else requests,
        clients=clients,
        window_s=window_seconds,
        min_auc=min_auc,
        host=host,
        port=port,
        keep_running=keep_running,
    )
    console = Console()
    try:
        options.check()
    except DemoError as exc:
        raise typer.BadParameter(f"{exc}; {exc.hint}") from exc
    signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`, `kill`: clean up as for Ctrl-C
    try:
        DemoRun(options, console).run()
    except StepFailed as failed:
        console.print(f"\n[bold red]✗ step {failed.number} failed:[/] {failed.title}")
        console.print(failed.error, highlight=False, markup=False)
        console.print(f"[bold]What to do:[/] {escape(failed.hint)}", highlight=False)
        raise typer.Exit(1) from failed
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/]")
        raise typer.Exit(130) from None
    console.print("[bold green]Demo complete.[/]")


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
