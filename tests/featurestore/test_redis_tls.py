"""rediss:// on a real TLS redis-server (one of this module's own, with certificates made here):
the asyncio pipe (the predict path's reads) and the blocking clients take the URL's `ssl_*`
options alike — a CA of our own, a client certificate the server requires, no verification
when `ssl_cert_reqs=none` — and refuse a server they cannot verify with an `OnlineStoreError`
that names the URL without its password."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
import redis as redis_lib

from featurestore.config import RedisSettings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.errors import ConfigError, OnlineStoreError
from featurestore.online import OnlineStore, read_views_async
from featurestore.redis_client import PROBE, make_client, make_pipe, redis_errors
from featurestore.redis_pipe import pack
from featurestore.services import free_port
from featurestore.tiles import TileLayout
from tests.conftest import unavailable

pytestmark = pytest.mark.integration

PASSWORD = "tls-pw-Q7"  # noqa: S105 - a throwaway server's


@dataclass(frozen=True)
class TlsServer:
    port: int
    certs: Path

    def url(self, db: int = 0, password: bool = True, **options: str) -> str:
        auth = f":{PASSWORD}@" if password else ""
        query = f"?{urlencode(options)}" if options else ""
        return f"rediss://{auth}127.0.0.1:{self.port}/{db}{query}"

    def trusted(self, db: int = 0, **extra: str) -> str:
        """The URL with our CA and a client certificate (the server asks for one)."""
        return self.url(db, **self.client_options(), **extra)

    def client_options(self) -> dict[str, str]:
        return {
            "ssl_ca_certs": str(self.certs / "ca.crt"),
            "ssl_certfile": str(self.certs / "client.crt"),
            "ssl_keyfile": str(self.certs / "client.key"),
        }


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(folder: Path) -> None:
    """A CA, and a server (127.0.0.1, localhost) and a client certificate it signed."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=fstore-test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
            cwd=folder,
        )  # fmt: skip


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if binary is None or openssl is None:
        unavailable("needs redis-server and openssl on PATH")
    certs = tmp_path_factory.mktemp("redis-tls")
    _make_certs(certs)
    port = free_port()
    log = certs / "redis.log"
    argv = [
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(certs / "server.crt"), "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.crt"), "--tls-auth-clients", "yes",
        "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(certs),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    server = TlsServer(port, certs)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                text = log.read_text()
                if "TLS" in text and "not" in text and "support" in text:
                    unavailable(f"this redis-server has no TLS: {text[-300:]}")
                raise AssertionError(f"redis-server with TLS exited: {text[-2000:]}")
            try:
                if make_client(RedisSettings(url=server.trusted()), PROBE).ping():
                    break
            except redis_lib.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        process.wait(10)


def test_the_pipe_speaks_tls_with_a_client_certificate_auth_and_a_database(
    tls_server: TlsServer,
) -> None:
    key = f"test-tls-{uuid.uuid4().hex[:8]}".encode()
    settings = RedisSettings(url=tls_server.trusted(db=3))

    async def main() -> list[object]:
        pipe = make_pipe(settings)
        answers = await pipe.execute(
            pack(b"SET", key, b"over-tls", b"PX", b"60000") + pack(b"GET", key), 2
        )
        pipe.close()
        return answers

    assert asyncio.run(main()) == [b"OK", b"over-tls"]
    # The blocking client reads the same URL the same way (and the pipe selected db 3).
    assert make_client(settings).get(key) == b"over-tls"
    assert make_client(RedisSettings(url=tls_server.trusted(db=0))).get(key) is None


def test_no_verification_when_the_url_says_none(tls_server: TlsServer) -> None:
    options = tls_server.client_options()
    del options["ssl_ca_certs"]  # our CA unknown: only `ssl_cert_reqs=none` lets this through
    settings = RedisSettings(url=tls_server.url(**options, ssl_cert_reqs="none"))

    async def main() -> list[object]:
        pipe = make_pipe(settings)
        answers = await pipe.execute(pack(b"PING"), 1)
        pipe.close()
        return answers

    assert asyncio.run(main()) == [b"PONG"]
    assert make_client(settings).ping()


@pytest.mark.parametrize(
    "drop",
    [
        pytest.param("ssl_ca_certs", id="server-not-verified"),
        pytest.param("ssl_certfile", id="no-client-certificate"),
    ],
)
def test_a_refused_handshake_is_an_online_store_error_without_the_password(
    tls_server: TlsServer, drop: str
) -> None:
    options = tls_server.client_options()
    del options[drop]
    if drop == "ssl_certfile":
        del options["ssl_keyfile"]
    settings = RedisSettings(url=tls_server.url(**options))

    async def main() -> None:
        pipe = make_pipe(settings)
        with redis_errors(settings):
            await pipe.execute(pack(b"PING"), 1)

    for attempt in (lambda: asyncio.run(main()), make_client(settings).ping):
        with pytest.raises(OnlineStoreError) as caught:
            with redis_errors(settings):
                attempt()
        text = str(caught.value)
        assert f"Redis at rediss://:***@127.0.0.1:{tls_server.port}/0" in text, text
        assert PASSWORD not in text


def test_online_reads_go_over_tls(tls_server: TlsServer) -> None:
    """The predict path's read (`read_views_async`, the fold script through the pipe) on a
    TLS server: its first call finds no script loaded and loads it."""
    view = FeatureView(
        name="tls",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=KafkaSource(
            name="s", topic="t", timestamp_field="ts", schema={"user_id": "string", "x": "float64"}
        ),
        tile="1m",
        aggregations=[Aggregation(column="x", function="sum", windows=["10m"])],
    )
    store = OnlineStore(RedisSettings(url=tls_server.trusted(), namespace="tls-test"))
    layout = TileLayout(view)

    async def main() -> None:
        try:
            [values] = await read_views_async(
                store, [("tls", 1, layout, ["ann", "bob"])], 1_767_225_600_000_000
            )
            assert values.features == ["x_sum_10m"]
            # Nothing stored: no event in either window, and a sum of none is 0.
            assert np.isnan(values.event_times).all()
            assert (values.values == 0).all()
        finally:
            store.close()

    asyncio.run(main())


def test_a_key_without_its_certificate_is_a_config_error(tls_server: TlsServer) -> None:
    options = tls_server.client_options()
    del options["ssl_certfile"]
    with pytest.raises(ConfigError, match="ssl_keyfile without its ssl_certfile"):
        make_pipe(RedisSettings(url=tls_server.url(**options)))
