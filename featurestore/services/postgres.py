"""A local PostgreSQL server for the registries: Debian's `postgresql`, on loopback.

`initdb` writes the cluster into the state dir; the server listens on 127.0.0.1 only (no Unix
socket) and asks for a password (scram-sha-256) kept in a 0600 file beside the data. PostgreSQL
refuses to run as root, so under root both `initdb` and the server run as the `postgres` user
that Debian's package creates (or `nobody` without it); that user must be able to reach the
state dir, which a folder under `/root` is not: choose another (`FSTORE_SERVICES_STATE_DIR`).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess  # noqa: S404 - running initdb and postgres is this module's job
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from featurestore.config import ServicesSettings, url_without_password
from featurestore.errors import ServiceError
from featurestore.services.process import (
    ManagedProcess,
    apt_install,
    ensure_port_free,
    wait_until,
)

__all__ = ["DATABASE", "HOST", "PACKAGE", "USER", "PostgresServer", "PostgresStatus"]

HOST = "127.0.0.1"
PACKAGE = "postgresql"
USER = "fstore"  # the cluster's superuser, which the registries connect as
DATABASE = "fstore"
_SERVICE_USERS = ("postgres", "nobody")  # whom the server runs as under root, first found


@dataclass(frozen=True)
class PostgresStatus:
    running: bool
    pid: int | None
    url: str  # without the password
    version: str | None
    data_dir: Path
    log_file: Path


class PostgresServer:
    def __init__(self, config: ServicesSettings) -> None:
        self.config = config
        self.home = config.state_dir / "postgres"
        self.data_dir = self.home / "data"
        self.password_file = self.home / "password"
        self.log_file = config.state_dir / "logs" / "postgres.log"
        # `-D <data dir>` stays in the postmaster's command line: `down` finds it by that.
        self.process = ManagedProcess("postgres", self.home / "postgres.pid", str(self.data_dir))

    @property
    def url(self) -> str:
        """The URL with its password, for a client to connect (never print it: `shown_url`)."""
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql://{USER}:{password}@{HOST}:{self.config.postgres_port}/{DATABASE}"

    @property
    def shown_url(self) -> str:
        return url_without_password(
            f"postgresql://{USER}:pw@{HOST}:{self.config.postgres_port}/{DATABASE}"
        )

    def status(self) -> PostgresStatus:
        pid = self.process.pid()
        binaries = _bin_dir()
        version = _version(binaries) if binaries else None
        return PostgresStatus(
            pid is not None, pid, self.shown_url, version, self.data_dir, self.log_file
        )

    def start(self, timeout: float = 60.0) -> bool:
        """initdb on first use, start the server, wait until it answers, create the `fstore`
        database. False when it was already running."""
        if self.process.pid() is not None:
            return False
        binaries = _bin_dir() or _install()
        ensure_port_free("PostgreSQL", HOST, self.config.postgres_port)
        user = _service_user()
        self.home.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(binaries, user)
        argv = [
            str(binaries / "postgres"),
            "-D",
            str(self.data_dir),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"port={self.config.postgres_port}",
            "-c",
            "unix_socket_directories=",  # TCP on loopback only; no socket file to place
        ]
        proc = self.process.start(argv, self.log_file, cwd=self.data_dir, user=user)
        wait_until(self._answers, timeout, "postgres", self.log_file, proc)
        self._create_database()
        return True

    def stop(self) -> bool:
        # SIGINT is PostgreSQL's "fast" shutdown: SIGTERM's "smart" one waits for every client.
        return self.process.stop(stop_signal=signal.SIGINT)

    def _initdb(self, binaries: Path, user: str | None) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-made cluster from an interrupted initdb
        self.data_dir.mkdir(mode=0o700)
        if not self.password_file.exists():
            self.password_file.touch(mode=0o600)
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        # initdb reads the password from a file the service user owns, removed right after.
        pwfile = self.home / "initdb.pw"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.password_file.read_text())
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self.data_dir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            _check_reachable(self.data_dir, user)
        argv = [
            str(binaries / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        ]
        try:
            result = _run(argv, user)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServiceError(
                f"initdb into {self.data_dir} failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def _connect_args(self, database: str) -> dict[str, object]:
        return {
            "host": HOST,
            "port": self.config.postgres_port,
            "user": USER,
            "password": self.password_file.read_text().strip(),
            "dbname": database,
            "connect_timeout": 2,
            "autocommit": True,
        }

    def _answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(**self._connect_args("postgres")):  # type: ignore[arg-type]
                return True
        except psycopg.OperationalError:
            return False

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(**self._connect_args("postgres")) as conn:  # type: ignore[arg-type]
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')


def _bin_dir() -> Path | None:
    """Debian keeps the server binaries in /usr/lib/postgresql/<major>/bin (newest first);
    elsewhere `pg_config --bindir` or PATH tells."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    if found:
        return found[0].parent
    initdb = shutil.which("initdb")
    if initdb is not None and (Path(initdb).resolve().parent / "postgres").exists():
        return Path(initdb).resolve().parent
    return None


def _install() -> Path:
    apt_install(
        PACKAGE,
        "PostgreSQL's initdb and postgres were not found. Install the Debian/Ubuntu package "
        f"`{PACKAGE}` (`sudo apt-get install {PACKAGE}`; on macOS `brew install postgresql`), "
        "or point FSTORE_REGISTRY_URL at a running PostgreSQL.",
    )
    binaries = _bin_dir()
    if binaries is None:
        raise ServiceError(f"`apt-get install {PACKAGE}` succeeded but initdb is not found")
    return binaries


def _service_user() -> str | None:
    """None: run as ourselves. Under root, an unprivileged user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in _SERVICE_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ServiceError(
        "running as root, and neither a `postgres` nor a `nobody` user exists to run "
        "PostgreSQL as (it refuses root); create one (`useradd --system postgres`)"
    )


def _run(argv: list[str], user: str | None) -> subprocess.CompletedProcess[str]:
    """Run `argv` to the end, as `user` (its group, no other groups) when given."""
    uid = gid = None
    if user is not None:
        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    return subprocess.run(  # noqa: S603 - argv built by this module
        argv,
        capture_output=True,
        text=True,
        check=False,
        user=uid,
        group=gid,
        extra_groups=[] if user is not None else None,
    )


def _check_reachable(path: Path, user: str) -> None:
    if _run(["/usr/bin/test", "-w", str(path)], user).returncode != 0:
        raise ServiceError(
            f"PostgreSQL runs as the unprivileged user {user!r} (it refuses root), which cannot "
            f"reach {path}: a folder on the way is closed to other users (/root is). Choose a "
            "state dir it can reach, e.g. FSTORE_SERVICES_STATE_DIR=/var/lib/fstore."
        )


def _version(binaries: Path) -> str | None:
    result = _run([str(binaries / "postgres"), "--version"], None)
    match = re.search(r"(\d+(?:\.\d+)+)", result.stdout)
    return match.group(1) if match else None
