"""Peers in virtualenvs of their own: Feast and Quix Streams, each at the version the figures
in BENCHMARKS.md were taken with."""

from __future__ import annotations

import os
import subprocess  # noqa: S404 - pip and venv make the peers' virtualenvs
import sys
from pathlib import Path

from _report import log

__all__ = ["FEAST_VERSION", "QUIX_VERSION", "feast_python", "peer_python", "quix_python"]

FEAST_VERSION = "0.67.0"
QUIX_VERSION = "3.28.1"


def peer_python(venv_name: str, requirement: str, imports: str, version: str) -> Path:
    """The interpreter of a peer's own virtualenv under ~/.cache/fstore/bench, made on first use
    and then reused while `import <imports>` works and the first of them is at `version`.

    Peers pin their own pandas, pyarrow, numpy or confluent-kafka ranges; keeping each apart
    leaves ours alone. A venv that lacks something is completed in place, not remade: another
    benchmark may be running the peer from it at this moment.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fstore" / "bench"
    venv = cache / venv_name
    python = venv / "bin" / "python"
    first = imports.split(",")[0].strip()
    check = [str(python), "-c", f"import {imports}; print({first}.__version__)"]
    steps = [[str(python), "-m", "pip", "install", "--quiet", requirement]]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True, check=False)  # noqa: S603
        if found.stdout.strip() == version:
            return python
        log(f"installing {requirement} into {venv}")
    else:
        log(f"creating {venv} with {requirement} (once; reused on later runs)")
        cache.mkdir(parents=True, exist_ok=True)
        steps.insert(0, [sys.executable, "-m", "venv", "--clear", str(venv)])
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` failed:\n{result.stdout}{result.stderr}")
    return python


def feast_python() -> Path:
    """Feast's interpreter (training sets with DuckDB, serving from Redis), in its own venv."""
    return peer_python(
        "feast-venv",
        f"feast[duckdb,redis]=={FEAST_VERSION}",
        "feast, duckdb, ibis, redis",
        FEAST_VERSION,
    )


def quix_python() -> Path:
    """The interpreter of Quix Streams' own virtualenv, made on first use and then reused."""
    return peer_python("quix-venv", f"quixstreams=={QUIX_VERSION}", "quixstreams", QUIX_VERSION)
