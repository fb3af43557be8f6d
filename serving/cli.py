"""Commands the serving package adds to `fstore` (through the `fstore.commands` entry point)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from featurestore.config import load_settings
from serving.tls import tls_options

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
        int, typer.Option(min=1, help="Worker processes; each loads the models itself.")
    ] = 1,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS instead of HTTP.")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option(help="PEM private key of --ssl-certfile (if not in it).")
    ] = None,
) -> None:
    """Run the online scoring API (OpenAPI docs at /docs, metrics at /metrics)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = load_settings().serving  # a bad configuration fails here, before any worker starts
    tls = tls_options(ssl_certfile, ssl_keyfile)  # and so does an unusable certificate
    uvicorn.run(
        "serving.app:load_app",
        factory=True,
        host=host or config.host,
        port=port or config.port,
        workers=workers,
        access_log=False,  # a log line per request costs more than scoring it
        **tls,
    )
