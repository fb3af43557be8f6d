"""A local Redis server: Debian's `redis-server`, on loopback, with a config written here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess  # noqa: S404 - installing and running redis-server is this module's job
from dataclasses import dataclass
from pathlib import Path

from featurestore.config import ServicesSettings
from featurestore.errors import ServiceError
from featurestore.services.process import ManagedProcess, ensure_port_free, wait_until

__all__ = ["HOST", "PACKAGE", "RedisServer", "RedisStatus"]

HOST = "127.0.0.1"
PACKAGE = "redis-server"


@dataclass(frozen=True)
class RedisStatus:
    running: bool
    pid: int | None
    url: str
    version: str | None
    data_dir: Path
    log_file: Path


class RedisServer:
    def __init__(self, config: ServicesSettings) -> None:
        self.config = config
        self.home = config.state_dir / "redis"
        self.config_file = self.home / "redis.conf"
        self.log_file = config.state_dir / "logs" / "redis.log"
        self.process = ManagedProcess("redis", self.home / "redis.pid", str(self.config_file))

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.config.redis_port}/0"

    def status(self) -> RedisStatus:
        pid = self.process.pid()
        binary = shutil.which("redis-server")
        version = _version(binary) if binary else None
        return RedisStatus(pid is not None, pid, self.url, version, self.home, self.log_file)

    def start(self, timeout: float = 30.0) -> bool:
        """Start redis-server and wait for PING. False when it was already running."""
        if self.process.pid() is not None:
            return False
        binary = _redis_server()
        ensure_port_free("Redis", HOST, self.config.redis_port)
        self.home.mkdir(parents=True, exist_ok=True)
        # Persistence by an append-only file, fsynced every second: a restart (or a crash of
        # redis-server) keeps the online state, so the workers need not rebuild it from the
        # offline log (they would: featurestore/writer.py). `everysec` writes each command to
        # the file without forking; only the occasional AOF rewrite forks, and with no RDB
        # snapshots (`save ""`) nothing forks per write. The file lives in `dir`.
        self.config_file.write_text(
            f"bind {HOST}\n"
            f"port {self.config.redis_port}\n"
            f"dir {self.home}\n"
            "daemonize no\n"
            "protected-mode yes\n"
            'save ""\n'
            "appendonly yes\n"
            "appendfsync everysec\n"
            "loglevel notice\n"
            # Keep argv (with this config's path) visible: `down` identifies the process by it.
            "set-proc-title no\n"
        )
        proc = self.process.start([binary, str(self.config_file)], self.log_file, cwd=self.home)
        wait_until(self._answers, timeout, "redis-server", self.log_file, proc)
        return True

    def stop(self) -> bool:
        return self.process.stop()

    def _answers(self) -> bool:
        # Imported here: the CLI starts without loading redis-py.
        from featurestore.config import RedisSettings
        from featurestore.redis_client import answers

        return answers(RedisSettings(url=self.url))


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            "redis-server was not found on PATH. Install the Debian/Ubuntu package "
            f"`{PACKAGE}` (`sudo apt-get install {PACKAGE}`; on macOS `brew install redis`), "
            "or point FSTORE_REDIS_URL at a running Redis."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", PACKAGE]):
        result = subprocess.run(  # noqa: S603 - fixed argv
            argv, capture_output=True, text=True, env=env, check=False
        )
        if result.returncode != 0:
            raise ServiceError(
                f"installing {PACKAGE} failed (`{' '.join(argv)}` exited {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError(f"`apt-get install {PACKAGE}` succeeded but redis-server is not on PATH")
    return binary


def _version(binary: str) -> str | None:
    result = subprocess.run(  # noqa: S603 - fixed argv
        [binary, "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"v=(\S+)", result.stdout)
    return match.group(1) if match else None
