"""`fstore serve` as a real process for a test: started with a config file on a free port,
waited for until `/readyz` answers 200, stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx

from featurestore.services import free_port

__all__ = ["fstore_serve_process"]


@contextmanager
def fstore_serve_process(
    config: Path,
    log: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
) -> Iterator[str]:
    """The URL of a ready `fstore serve --port <free> *args` reading `config`, its output in
    `log`. `env` replaces the inherited environment (FSTORE_CONFIG is added to it)."""
    port = free_port()
    argv = [sys.executable, "-c", "from featurestore.cli import main; main()", "serve"]
    argv += ["--port", str(port), *args]
    environment = {**(os.environ if env is None else env), "FSTORE_CONFIG": str(config)}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"fstore serve {' '.join(args)} was not ready"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(60)
