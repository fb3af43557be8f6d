"""Feast's Python feature server, the peer of bench/serving.py: its repo, its Redis, `feast serve`.

Feast runs in its own virtualenv (`_peers.feast_python`); bench/feast_serving_repo.py builds
the repo and materializes the values into Redis database `db` of the benchmark's Redis, keys
ending in the run's project name (so they can be found and removed on a borrowed server).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis
from _peers import feast_python
from _services import delete_keys
from _subprocesses import Child, run_json

__all__ = [
    "drop_feast_keys",
    "feast_body",
    "feast_redis",
    "feast_values",
    "setup_feast",
    "start_feast",
    "write_values",
]

HERE = Path(__file__).resolve().parent


def feast_redis(url: str, db: int) -> str:
    """Feast's connection string (`host:port,db=N`) for the Redis at `url`, database `db`."""
    parts = urlsplit(url)
    text = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379},db={db}"
    if parts.password:
        text += f",password={parts.password}"
    return text


def write_values(path: Path, users: list[str], names: list[str], matrix: np.ndarray) -> None:
    """One row per user: its feature values (null where fstore has none), stamped now."""
    now = datetime.now(UTC)
    columns: dict[str, pa.Array] = {
        "user_id": pa.array(users, pa.string()),
        "ts": pa.array([now] * len(users), pa.timestamp("us", tz="UTC")),
    }
    for i, name in enumerate(names):
        values = matrix[:, i]
        columns[name] = pa.array(values, pa.float64(), mask=np.isnan(values))
    pq.write_table(pa.table(columns), path)


def setup_feast(
    repo: Path, redis_url: str, db: int, project: str, view: str, values: Path
) -> dict[str, Any]:
    """Apply the repo and materialize `values`; Feast's figures (seconds, rows)."""
    argv = [
        str(feast_python()),
        str(HERE / "feast_serving_repo.py"),
        *("--repo", str(repo), "--project", project, "--view", view),
        *("--redis", feast_redis(redis_url, db), "--values", str(values)),
    ]
    return run_json("the Feast repo setup", argv, timeout=900, cwd=repo.parent)[-1]


def start_feast(repo: Path, host: str, port: int, max_requests: int, log_file: Path) -> Child:
    """`feast serve`: gunicorn with one uvicorn worker (as ours and the floor have one process),
    without its access log (neither has one). `max_requests` 0 keeps gunicorn from recycling
    the worker every 1,000 requests (Feast's default), which would cost Feast, not us."""
    feast = Path(feast_python()).parent / "feast"
    argv = [str(feast), "-c", str(repo), "serve", "-h", host, "-p", str(port)]
    argv += ["--no-access-log", "--workers", "1", "--max-requests", str(max_requests)]
    return Child("feast serve", argv, log_file, cwd=repo)


def feast_body(view: str, names: list[str], users: list[str]) -> bytes:
    """A `/get-online-features` request for the 12 features of `users`."""
    return json.dumps(
        {"features": [f"{view}:{name}" for name in names], "entities": {"user_id": users}}
    ).encode()


def feast_values(response: dict[str, Any], names: list[str]) -> np.ndarray:
    """Feast's answer as a users x features matrix (NaN where it has no value)."""
    order = response["metadata"]["feature_names"]
    columns = [response["results"][order.index(name)]["values"] for name in names]
    return np.array([[np.nan if v is None else float(v) for v in col] for col in columns]).T


def drop_feast_keys(redis_url: str, db: int, project: str) -> int:
    """Remove the run's keys from Feast's database (each key ends with the project's name)."""
    parts = urlsplit(redis_url)
    client = redis.Redis(
        host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=db, password=parts.password
    )
    return delete_keys(client, f"*{project}")


if __name__ == "__main__":
    sys.exit("bench/feast_serving.py is a module of bench/serving.py; run that instead")
