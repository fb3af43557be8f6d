"""A real S3 server on loopback: SeaweedFS (Apache-2.0), for an `s3://` offline root.

No Docker engine and no package are needed: the `seaweedfs` Go module is downloaded from the Go
module proxy (`go mod download`), copied to a writable folder (its go.mod has replace directives,
so `go install` refuses it) and built there (`go build ./weed`, minutes on 2 cores) into the cache
directory, once per version. `weed server -s3` then runs its master, volume server, filer and S3
gateway in one process, bound to 127.0.0.1, with its data under the state dir.

The gateway requires signed requests: one identity whose access key and random secret are
written (mode 0600) to `<state>/seaweedfs/credentials.json` on the first start; nothing prints
the secret.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess  # noqa: S404 - running go and weed is this module's job
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from featurestore.config import OfflineSettings, ServicesSettings
from featurestore.errors import ServiceError
from featurestore.services.process import (
    ManagedProcess,
    ensure_port_free,
    free_port,
    port_open,
    tail,
    wait_until,
)

__all__ = [
    "SEAWEEDFS_MODULE",
    "S3Credentials",
    "S3Server",
    "S3Status",
]

HOST = "127.0.0.1"
SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: SecretStr


@dataclass(frozen=True)
class S3Status:
    running: bool
    pid: int | None
    endpoint: str
    version: str
    data_dir: Path
    log_file: Path


class S3Server:
    """One local SeaweedFS, described entirely by `ServicesSettings`."""

    def __init__(self, config: ServicesSettings) -> None:
        self.config = config
        self.version = config.seaweedfs_version
        self.home = config.state_dir / "seaweedfs"
        self.data_dir = self.home / "data"
        self.identities_file = self.home / "s3.json"
        self.credentials_file = self.home / "credentials.json"
        self.log_file = config.state_dir / "logs" / "seaweedfs.log"
        self.build_dir = config.cache_dir / "seaweedfs" / self.version
        self.binary = self.build_dir / "weed"
        self.process = ManagedProcess(
            "seaweedfs", self.home / "weed.pid", str(self.identities_file)
        )

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.config.s3_port}"

    def status(self) -> S3Status:
        pid = self.process.pid()
        return S3Status(
            pid is not None, pid, self.endpoint, self.version, self.data_dir, self.log_file
        )

    def credentials(self) -> S3Credentials:
        """The gateway's identity, made on the first call (a random secret, file mode 0600)."""
        if self.credentials_file.exists():
            saved = json.loads(self.credentials_file.read_text())
            return S3Credentials(saved["access_key"], SecretStr(saved["secret_key"]))
        self.home.mkdir(parents=True, exist_ok=True)
        access_key = "FS" + secrets.token_hex(9).upper()  # 20 characters, as AWS's are
        made = S3Credentials(access_key, SecretStr(secrets.token_urlsafe(30)))
        _write_private(
            self.credentials_file,
            json.dumps(
                {"access_key": made.access_key, "secret_key": made.secret_key.get_secret_value()}
            ),
        )
        return made

    def offline_settings(self, root: str, **overrides: object) -> OfflineSettings:
        """Offline settings for an `s3://bucket/prefix` root on this server."""
        credentials = self.credentials()
        return OfflineSettings(
            root=root,
            s3_endpoint=self.endpoint,
            s3_region="us-east-1",
            s3_access_key=SecretStr(credentials.access_key),
            s3_secret_key=credentials.secret_key,
            **overrides,  # type: ignore[arg-type]
        )

    def start(self, timeout: float = 120.0) -> bool:
        """Start SeaweedFS (building it first if needed) and wait until its S3 gateway answers a
        signed request. Returns False when it was already running (then nothing is done)."""
        if self.process.pid() is not None:
            return False
        weed = self.ensure_binary()
        ensure_port_free("SeaweedFS S3", HOST, self.config.s3_port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        credentials = self.credentials()
        identities = {
            "identities": [
                {
                    "name": "fstore",
                    "credentials": [
                        {
                            "accessKey": credentials.access_key,
                            "secretKey": credentials.secret_key.get_secret_value(),
                        }
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        _write_private(self.identities_file, json.dumps(identities))
        # Internal ports (master, volume, filer, their gRPC) are free ones, never the defaults
        # another SeaweedFS on the machine may hold; only the S3 port is configured.
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
            )
        }
        argv = [
            str(weed),
            "server",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-dir={self.data_dir}",
            *(f"-{name}={port}" for name, port in ports.items()),
            "-filer",
            "-s3",
            f"-s3.port={self.config.s3_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.identities_file}",
            "-master.telemetry=false",  # no traffic off this machine
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",  # as many volumes as the disk holds
            "-volume.preStopSeconds=0",
        ]
        proc = self.process.start(argv, self.log_file, cwd=self.home)
        wait_until(self._answers, timeout, f"SeaweedFS {self.version}", self.log_file, proc)
        return True

    def stop(self) -> bool:
        return self.process.stop()

    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` on this server when it does not exist."""
        from featurestore.offline.storage import s3_filesystem

        fs = s3_filesystem(self.offline_settings(f"s3://{bucket}"), create_buckets=True)
        fs.create_dir(bucket)

    def ensure_binary(self) -> Path:
        """Build `weed` from the Go module proxy into the cache, once per version (a second
        process asking meanwhile waits for the first one's build)."""
        if self.binary.exists():
            return self.binary
        self.build_dir.mkdir(parents=True, exist_ok=True)
        with (self.build_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.binary.exists():
                return self.binary
            return self._build()

    def _build(self) -> Path:
        go = shutil.which("go")
        if go is None:
            raise ServiceError(
                "Go (1.24+) is needed once to build SeaweedFS, the local S3 server, from the Go "
                "module proxy, and was not found on PATH. Install it (https://go.dev/dl, or "
                "`apt-get install golang`), or point the offline settings at a running S3 server."
            )
        log = self.build_dir / "build.log"
        module = f"{SEAWEEDFS_MODULE}@{self.version}"
        with log.open("wb") as out:
            fetched = subprocess.run(  # noqa: S603 - fixed argv
                [go, "mod", "download", "-json", module],
                stdout=subprocess.PIPE,
                stderr=out,
                check=False,
            )
        if fetched.returncode != 0:
            raise ServiceError(
                f"`go mod download {module}` failed (is the Go module proxy reachable? GOPROXY "
                f"settings?): {fetched.stdout.decode(errors='replace')[-2000:]}\n{tail(log)}"
            )
        source = Path(json.loads(fetched.stdout)["Dir"])
        work = self.build_dir / "src"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(source, work)
        for folder, _dirs, files in os.walk(work):  # the module cache is read-only
            os.chmod(folder, 0o755)  # noqa: S103 - our own build folder
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)  # noqa: PTH101, PTH118
        partial = self.build_dir / "weed.partial"
        with log.open("ab") as out:
            built = subprocess.run(  # noqa: S603 - fixed argv
                [go, "build", "-o", str(partial), "./weed"],
                cwd=work,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if built.returncode != 0:
            raise ServiceError(f"building SeaweedFS failed; log: {log}\n{tail(log)}")
        partial.rename(self.binary)
        shutil.rmtree(work, ignore_errors=True)  # the module cache keeps the source
        return self.binary

    def _answers(self) -> bool:
        if not port_open(HOST, self.config.s3_port):
            return False
        from pyarrow import fs as pafs

        from featurestore.offline.storage import s3_filesystem

        settings = self.offline_settings("s3://probe", s3_timeout_s=2.0)
        try:
            s3_filesystem(settings).get_file_info(pafs.FileSelector("", recursive=False))
        except OSError:
            return False  # its filer or volume server is not up yet
        return True


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
