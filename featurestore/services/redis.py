"""A local Redis server: Debian's `redis-server`, on loopback, with a config written here.

With a `RedisSecurity` it speaks TLS only (`port 0`, `tls-port`) and knows only the ACL users
it names: the `default` user is switched off, so nobody gets in without a name and password.
Debian builds redis-server with TLS (6.0 on); a build without it says so and the start fails
with its log."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess  # noqa: S404 - installing and running redis-server is this module's job
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from featurestore.config import ServicesSettings
from featurestore.errors import ServiceError
from featurestore.services.process import (
    ManagedProcess,
    apt_install,
    ensure_port_free,
    wait_until,
)

__all__ = ["HOST", "PACKAGE", "RedisSecurity", "RedisServer", "RedisStatus", "redis_server_binary"]

HOST = "127.0.0.1"
PACKAGE = "redis-server"


@dataclass(frozen=True)
class RedisSecurity:
    """TLS with the server's PEM certificate and key (`cafile`: the CA clients verify it with,
    and that signs the client certificates the server asks for when `client_certificates`),
    and ACL users (name -> password) with every right; the default user is off."""

    certfile: Path
    keyfile: Path
    cafile: Path
    users: Mapping[str, str] = field(repr=False)
    client_certificates: bool = False

    def __post_init__(self) -> None:
        if not self.users:
            raise ServiceError("RedisSecurity needs at least one ACL user: the default is off")
        for name, password in self.users.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not password:
                raise ServiceError(
                    f"Redis ACL user {name!r}: a name of letters, digits, _ . - and a password"
                )

    def url(
        self,
        port: int,
        user: str,
        password: str | None = None,
        db: int = 0,
        tls: Mapping[str, str] | None = None,
    ) -> str:
        """The rediss:// URL of a client logging in as `user` (with its own password unless
        `password` says otherwise), verifying the server with `cafile`; `tls` adds or
        overrides redis-py's `ssl_*` options (a client certificate: ssl_certfile,
        ssl_keyfile)."""
        secret = self.users[user] if password is None else password
        options = {"ssl_ca_certs": str(self.cafile), **(tls or {})}
        auth = f"{quote(user, safe='')}:{quote(secret, safe='')}@"
        return f"rediss://{auth}{HOST}:{port}/{db}?{urlencode(options)}"

    def config_lines(self, port: int) -> str:
        """redis.conf lines: TLS on `port` alone, and the users. Passwords are stored as their
        SHA-256 (`#<hex>`), so the file holds none."""
        lines = [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {self.certfile}",
            f"tls-key-file {self.keyfile}",
            f"tls-ca-cert-file {self.cafile}",
            f"tls-auth-clients {'yes' if self.client_certificates else 'no'}",
            "user default off",
        ]
        for name, password in self.users.items():
            digest = hashlib.sha256(password.encode()).hexdigest()
            lines.append(f"user {name} on #{digest} ~* &* +@all")
        return "".join(f"{line}\n" for line in lines)


@dataclass(frozen=True)
class RedisStatus:
    running: bool
    pid: int | None
    url: str
    version: str | None
    data_dir: Path
    log_file: Path


class RedisServer:
    def __init__(self, config: ServicesSettings, security: RedisSecurity | None = None) -> None:
        self.config = config
        self.security = security
        self.home = config.state_dir / "redis"
        self.config_file = self.home / "redis.conf"
        self.log_file = config.state_dir / "logs" / "redis.log"
        self.process = ManagedProcess("redis", self.home / "redis.pid", str(self.config_file))

    @property
    def url(self) -> str:
        """The server's URL (with a `RedisSecurity`: rediss:// without a user; a client's
        own URL is `security.url(port, user)`)."""
        scheme = "redis" if self.security is None else "rediss"
        return f"{scheme}://{HOST}:{self.config.redis_port}/0"

    def status(self) -> RedisStatus:
        pid = self.process.pid()
        binary = shutil.which("redis-server")
        version = _version(binary) if binary else None
        return RedisStatus(pid is not None, pid, self.url, version, self.home, self.log_file)

    def start(self, timeout: float = 30.0) -> bool:
        """Start redis-server and wait for PING. False when it was already running."""
        if self.process.pid() is not None:
            return False
        binary = redis_server_binary()
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
            + ("" if self.security is None else self.security.config_lines(self.config.redis_port))
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

        url = self.url
        if self.security is not None:
            user = next(iter(self.security.users))
            tls: dict[str, str] = {}
            if self.security.client_certificates:
                # The server's own certificate and key serve as a client's here.
                tls = {
                    "ssl_certfile": str(self.security.certfile),
                    "ssl_keyfile": str(self.security.keyfile),
                }
            url = self.security.url(self.config.redis_port, user, tls=tls)
        return answers(RedisSettings(url=url))


def redis_server_binary() -> str:
    """The redis-server binary: on PATH, else installed from Debian's package (as root)."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    apt_install(
        PACKAGE,
        "redis-server was not found on PATH. Install the Debian/Ubuntu package "
        f"`{PACKAGE}` (`sudo apt-get install {PACKAGE}`; on macOS `brew install redis`), "
        "or point FSTORE_REDIS_URL at a running Redis.",
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
