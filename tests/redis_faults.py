"""A redis-server of a test's own, to put in the states the shared one must never be put in:
paused (SIGSTOP), a replica of a master that is gone (READONLY on writes; MASTERDOWN on reads
with `replica-serve-stale-data no`), full under `noeviction` (OOM), running a long script (BUSY),
loading its data set at start (LOADING), or with an evicting `maxmemory-policy`.

Every state is the server's own, reached through its real configuration or commands: nothing
here imitates a reply.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess  # noqa: S404 - starting redis-server is this helper's job
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis as redis_lib

from featurestore.services import free_port


class OwnRedis:
    """`redis-server --port N --save '' --dir DIR ...` on loopback, stopped by `stop()` (a
    paused server is resumed first)."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.start(*args)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **options: Any) -> redis_lib.Redis:
        return redis_lib.Redis(
            host="127.0.0.1", port=self.port, **{"socket_timeout": 10, **options}
        )

    def start(self, *args: str, wait: bool = True) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not on PATH"
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own arguments
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--enable-debug-command",
                "yes",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_listening()

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Until the port answers at all (an error reply such as LOADING counts)."""
        deadline = time.monotonic() + timeout
        while True:
            client = self.client(socket_connect_timeout=0.5)
            try:
                client.ping()
                return
            except (redis_lib.BusyLoadingError, redis_lib.ResponseError):
                return
            except redis_lib.ConnectionError:
                assert self.process is not None and self.process.poll() is None, (
                    self.directory / "redis.log"
                ).read_text()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            finally:
                client.close()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.paused:
            self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart_loading(self, keys: int, delay_us: int) -> None:
        """Save the data set padded to `keys` keys, and start again loading it slowly: for about
        `keys * delay_us` µs the server answers LOADING (it serves clients while it loads)."""
        client = self.client()
        present = client.dbsize()
        if keys > present:
            client.execute_command("DEBUG", "POPULATE", keys - present, "fill")
        client.save()
        client.close()
        self.stop()
        self.start(
            "--key-load-delay",
            str(delay_us),
            "--loading-process-events-interval-bytes",
            "1024",
        )

    def wait_loaded(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis_lib.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    @contextmanager
    def busy(self, seconds_before: float = 0.3) -> Iterator[None]:
        """A script that runs until killed, from a connection of its own: past
        `busy-reply-threshold` every other command is answered BUSY. Killed on exit."""
        runner = self.client(socket_timeout=None)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                runner.eval("while true do end", 0)
            except redis_lib.ResponseError as exc:  # killed: what SCRIPT KILL answers it
                errors.append(exc)

        thread = threading.Thread(target=run, name="busy-script", daemon=True)
        thread.start()
        time.sleep(seconds_before)
        try:
            yield
        finally:
            killer = self.client()
            while thread.is_alive():
                try:
                    killer.script_kill()
                except redis_lib.ResponseError:  # NOTBUSY: not started yet, or just ended
                    pass
                thread.join(timeout=0.2)
            killer.close()
            runner.close()
            assert errors and "killed" in str(errors[0]).lower(), errors

    def replica_of_nothing(self, serve_stale: bool = True) -> None:
        """A replica of a master that is not there: writes answer READONLY; with
        `serve_stale=False` reads answer MASTERDOWN. The data set stays (no sync ever lands)."""
        client = self.client()
        client.config_set("replica-serve-stale-data", "yes" if serve_stale else "no")
        client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        client.close()

    def master_again(self) -> None:
        client = self.client()
        client.execute_command("REPLICAOF", "NO", "ONE")
        client.config_set("replica-serve-stale-data", "yes")
        client.close()


@contextmanager
def own_redis(directory: Path, *args: str) -> Iterator[OwnRedis]:
    server = OwnRedis(directory, *args)
    try:
        yield server
    finally:
        server.stop()


def copy_keys(source_url: str, pattern: str, target: OwnRedis) -> int:
    """Copy the keys matching `pattern` from a server (read only: DUMP) into `target`."""
    source = redis_lib.Redis.from_url(source_url)
    into = target.client()
    copied = 0
    for key in source.scan_iter(match=pattern, count=1000):
        dumped = source.dump(key)
        if dumped is not None:
            into.restore(key, 0, dumped, replace=True)
            copied += 1
    source.close()
    into.close()
    return copied
