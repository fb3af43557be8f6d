"""The `fstore` commands the demo runs as the user would: `apply`, `ingest`, `serve`, `monitor`,
each a process of its own with the demo's configuration and a log file in the demo folder."""

from __future__ import annotations

import shutil
import signal
import subprocess  # noqa: S404 - running the project's own CLI is the point
import sys
from pathlib import Path

from demo.errors import DemoError
from demo.workspace import Workspace
from featurestore.services.process import tail

__all__ = ["Processes", "fstore_executable"]

_STOP_TIMEOUT_S = 15.0


def fstore_executable() -> str:
    """The `fstore` script of the interpreter running the demo (its virtualenv), else PATH's."""
    beside = Path(sys.executable).parent / "fstore"
    found = str(beside) if beside.exists() else shutil.which("fstore")
    if found is None:
        raise DemoError(
            "cannot find the `fstore` command next to the Python running the demo, nor on PATH",
            "install the project (`make install`, or `pip install -e .`) and run the demo with it",
        )
    return found


class Processes:
    """Long-running `fstore` processes of one demo run, stopped together at the end."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.command = fstore_executable()
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def log_file(self, name: str) -> Path:
        return self.workspace.logs / f"{name}.log"

    def run(self, name: str, args: list[str], timeout: float = 120.0, **env: str) -> str:
        """Run `fstore ARGS` to its end; its output, or a DemoError quoting it."""
        try:
            done = subprocess.run(  # noqa: S603 - our own CLI, argv built here
                [self.command, *args],
                env=self.workspace.env(**env),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DemoError(f"`fstore {' '.join(args)}` did not finish in {timeout:.0f}s") from exc
        output = done.stdout + done.stderr
        self.log_file(name).write_text(output)
        if done.returncode != 0:
            raise DemoError(
                f"`fstore {' '.join(args)}` exited with {done.returncode}:\n{output.strip()}"
            )
        return done.stdout

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start `fstore ARGS` in the background, its output in logs/NAME.log."""
        log_file = self.log_file(name)
        with log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own CLI, argv built here
                [self.command, *args],
                env=self.workspace.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C reaches the demo, which then stops it in order.
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def check(self, name: str) -> None:
        """Fail, quoting its log, when process `name` has exited."""
        process = self.running[name]
        code = process.poll()
        if code is not None:
            raise DemoError(
                f"`fstore {name}` exited with {code}. Last lines of {self.log_file(name)}:\n"
                f"{tail(self.log_file(name))}",
                f"read {self.log_file(name)}",
            )

    def check_all(self) -> None:
        for name in self.running:
            self.check(name)

    def stop_all(self) -> None:
        """SIGTERM each (they flush and close cleanly), SIGKILL what does not stop in time."""
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.running.clear()

    def describe(self) -> list[tuple[str, int, Path]]:
        """(name, pid, log file) of each running process."""
        return [
            (name, process.pid, self.log_file(name))
            for name, process in self.running.items()
            if process.poll() is None
        ]
