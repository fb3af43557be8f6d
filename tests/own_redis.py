"""redis-server processes of a test's own, for tests that restart, flush or kill Redis: the
session's Redis is shared and is never touched that way."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis as redis_lib

from featurestore.services import free_port


class OwnRedis:
    """`redis-server` on a free loopback port, its files in `folder`, no RDB snapshots, and
    `args` on top (e.g. `--appendonly no`, `--replicaof ...`)."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        self.args = args
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.url)

    def start(self) -> OwnRedis:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dir", str(self.folder), "--save", "", *self.args]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, (self.folder / "redis.log").read_text()
            try:
                if self.client().ping():
                    return self
            except redis_lib.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it with `sig` (SIGTERM: a clean shutdown; SIGKILL: a crash) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)


@contextmanager
def own_redis(folder: Path, *args: str) -> Iterator[OwnRedis]:
    """A started `OwnRedis`, stopped afterwards."""
    server = OwnRedis(folder, *args).start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)
