"""The processes a benchmark starts: servers under test (`Child`), and runs that report their
figures as JSON lines on stdout (peers in their own virtualenvs, and measured roles of our own
scripts, each in a process of its own so that its peak RSS and CPU are its own).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess  # noqa: S404 - benchmarks start servers, peers and measured children
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from _machine import tree_cpu_seconds

__all__ = ["Child", "role_argv", "role_main", "run_json", "run_role"]


class Child:
    """A server under test in a subprocess (and a session) of its own, its output in a log file.

    Stopped by its process group, so that workers it forked stop with it.
    """

    def __init__(self, name: str, argv: list[str], log_file: Path, **popen: Any) -> None:
        self.name, self.log_file = name, log_file
        with log_file.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - argv built by the benchmark
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds(self.pid)

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll `ready()` until true; a clear error with the log's tail if the child dies or
        `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited with {self.process.returncode}"
                    if self.process.returncode is not None
                    else f"not ready after {timeout:g}s"
                )
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} {state}; its log ({self.log_file}):\n{tail}")
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


def run_json(
    what: str,
    argv: list[str],
    timeout: float,
    cwd: Path | None = None,
    relay_stderr: bool = False,
) -> list[dict[str, Any]]:
    """Run `argv` to its end; the JSON objects it printed on stdout (lines starting with "{"),
    in order. A clear error naming `what`, with its stderr's tail, if it fails or prints none;
    with `relay_stderr`, what it wrote to stderr is passed on to ours."""
    result = subprocess.run(  # noqa: S603 - argv built by the benchmark
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    if relay_stderr and result.stderr.strip():
        print(result.stderr, file=sys.stderr, end="")
    return lines


def role_argv(script: Path, role: str, spec: Path) -> list[str]:
    """The command line that runs `role` of `script` (see `role_main`) on a spec file."""
    return [sys.executable, str(script), role, str(spec)]


def run_role(
    script: Path,
    role: str,
    spec: dict[str, Any],
    timeout: float,
    cwd: Path | None = None,
    relay_stderr: bool = False,
) -> list[dict[str, Any]]:
    """Run `role` of `script` in a subprocess of our interpreter, `spec` handed over in a JSON
    file; its JSON lines, as `run_json` returns them."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        argv = role_argv(script, role, Path(handle.name))
        return run_json(f"the {role} subprocess", argv, timeout, cwd, relay_stderr)
    finally:
        os.unlink(handle.name)


def role_main(roles: Mapping[str, Callable[[dict[str, Any]], None]], argv: list[str]) -> None:
    """The child's side of `run_role`: `argv` is `ROLE SPEC.json`."""
    role, spec = argv
    roles[role](json.loads(Path(spec).read_text()))
