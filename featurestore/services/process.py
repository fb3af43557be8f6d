"""Start, find and stop a detached server process through a pid file.

A pid alone is not proof: pids are reused. A process counts as ours only when its command line
still contains the config file `up` wrote, so `down` never signals a stranger.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess  # noqa: S404 - starting local servers is this module's job
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestore.errors import ServiceError

__all__ = [
    "ManagedProcess",
    "apt_install",
    "ensure_port_free",
    "free_port",
    "port_open",
    "tail",
    "wait_until",
]


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid_file: Path
    marker: str  # a string unique to this instance's command line (its config path)

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if self.marker in (_command_line(pid) or ""):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(
        self, argv: list[str], log_file: Path, cwd: Path, user: str | None = None
    ) -> subprocess.Popen[bytes]:
        """`user`: run as that (unprivileged) user, with its group and no other groups."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        identity: dict[str, Any] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with log_file.open("ab") as log:
            # A new session: the server outlives the CLI and a Ctrl-C in its terminal.
            proc = subprocess.Popen(  # noqa: S603 - argv is built by us, not a shell string
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **identity,
            )
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{proc.pid}\n")
        _STARTED.append(proc)
        return proc

    def stop(self, timeout: float = 60.0, stop_signal: int = signal.SIGTERM) -> bool:
        """`stop_signal`, then SIGKILL after `timeout`. Returns whether something was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, stop_signal)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True


# Popen handles of the servers this process started: dropping one while its server runs (as it
# should) would make Python warn that the subprocess "is still running".
_STARTED: list[subprocess.Popen[bytes]] = []


def _alive(pid: int) -> bool:
    # Our child when started in this process: reap it so it does not linger as a zombie.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall through to the signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_state(pid)
    return state != "Z"


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _command_line(pid: int) -> str | None:
    if not _alive(pid):
        return None
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        # No /proc (macOS): ask ps.
        result = subprocess.run(  # noqa: S603
            ["ps", "-o", "command=", "-p", str(pid)],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip() or None


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(name: str, host: str, port: int, grace_s: float = 3.0) -> None:
    """Refuse to start on a port something answers on. A server that was just killed keeps its
    port for a moment after its process is gone (the kernel tears its sockets down after it), so
    a restart waits up to `grace_s` for the port to close before calling it taken."""
    deadline = time.monotonic() + grace_s
    while port_open(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    if port_open(host, port):
        raise ServiceError(
            f"cannot start {name}: {host}:{port} is already in use by another process. "
            "Stop it, or choose another port in featurestore.yaml (services:) or FSTORE_SERVICES_*."
        )


def free_port() -> int:
    """A port that was free a moment ago (for tests that run their own servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    log_file: Path,
    proc: subprocess.Popen[bytes],
) -> None:
    """Poll `check()` until true; fail with the log's tail if the process dies or time runs out.

    Liveness comes from the Popen handle, not the pid file: right after the fork the child's
    command line is still ours, so the marker check of `ManagedProcess.pid` would misfire.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"{what} exited during start-up. Last lines of {log_file}:\n{tail(log_file)}"
            )
        if check():
            return
        time.sleep(0.2)
    raise ServiceError(
        f"{what} did not become ready in {timeout:.0f}s. "
        f"Last lines of {log_file}:\n{tail(log_file)}"
    )


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def apt_install(package: str, missing: str) -> None:
    """Install a Debian package with apt-get, as root; `missing` is the error otherwise."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(missing)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        result = subprocess.run(  # noqa: S603 - fixed argv
            argv, capture_output=True, text=True, env=env, check=False
        )
        if result.returncode != 0:
            raise ServiceError(
                f"installing {package} failed (`{' '.join(argv)}` exited {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
