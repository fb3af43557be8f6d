"""Commands the serving package adds to `fstore` (through the `fstore.commands` entry point)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from featurestore.config import load_settings
from featurestore.errors import ConfigError
from serving.auth import guards_reads
from serving.tls import tls_options

__all__ = ["is_loopback", "register", "serve"]


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
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Listen beyond loopback with no API key defined: every read open to the network.",
        ),
    ] = False,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS instead of HTTP.")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option(help="PEM private key of --ssl-certfile (if not in it).")
    ] = None,
) -> None:
    """Run the online scoring API (OpenAPI docs at /docs, metrics at /metrics).

    With no API key defined the API's reads are open, so it listens on loopback only; any other
    address needs a key (`fstore keys create`) or `--insecure`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()  # a bad configuration fails here, before any worker starts
    config = settings.serving
    address = host or config.host
    tls = tls_options(ssl_certfile, ssl_keyfile)  # an unusable certificate fails here too
    if not is_loopback(address) and not guards_reads(settings):
        if not insecure:
            raise ConfigError(
                f"refusing to listen on {address}: no API key is defined, so every read would be "
                "open to the network. Create one (`fstore keys create NAME --scope SCOPE`), listen "
                "on 127.0.0.1, or pass --insecure to serve openly anyway"
            )
        logging.getLogger("fstore.serve").warning(
            "--insecure: listening on %s with no API key; every read is open to the network",
            address,
        )
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
            host=address,
            port=port or config.port,
            workers=workers,
            access_log=False,  # a log line per request costs more than scoring it
            **tls,
        )
    finally:
        if shared is not None and made_here:
            remove_multiprocess_dir(shared)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost).

    >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
    (True, False, True)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
