"""Commands the serving package adds to `fstore` (through the `fstore.commands` entry point)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
import uvicorn

from featurestore.config import load_settings

__all__ = ["register", "serve"]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: serving.host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: serving.port).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes behind one port; each loads the models itself, and "
            "/metrics and the dashboard add up all of them.",
        ),
    ] = 1,
) -> None:
    """Run the online scoring API (OpenAPI docs at /docs, metrics at /metrics)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = load_settings().serving  # a bad configuration fails here, before any worker starts
    # Several workers share their metrics through a folder (serving/metrics.py), set up before
    # they start: they inherit it through the environment. Imported here: `fstore` starts
    # without loading the app's modules.
    from serving.metrics import (
        multiprocess_dir,
        prepare_multiprocess_dir,
        remove_multiprocess_dir,
    )

    shared, made_here = None, False
    if workers > 1 or multiprocess_dir() is not None:
        shared, made_here = prepare_multiprocess_dir()
    try:
        uvicorn.run(
            "serving.app:load_app",
            factory=True,
            host=host or config.host,
            port=port or config.port,
            workers=workers,
            access_log=False,  # a log line per request costs more than scoring it
        )
    finally:
        if shared is not None and made_here:
            remove_multiprocess_dir(shared)
