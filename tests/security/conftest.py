"""Servers with encrypted, authenticated transport, started here for the security tests (the
shared servers speak plaintext): a CA of the session's own (trustme), a Kafka broker whose
client listener is SASL_SSL with SCRAM-SHA-512 users, and a Redis that speaks TLS only, asks
clients for a certificate and knows only its ACL users. Both on free loopback ports, in a
temporary folder, stopped at the end of the session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from featurestore.config import (
    KafkaSettings,
    ModelsSettings,
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    ServicesSettings,
    ServingSettings,
    Settings,
    load_settings,
)
from featurestore.services import (
    KafkaSecurity,
    KafkaServer,
    RedisSecurity,
    RedisServer,
    free_port,
)
from tests.conftest import unavailable
from tests.serving.conftest import world  # noqa: F401 - the served world, a fixture here too

# The secrets of the session's servers: no message, log line or answer may show one.
BROKER_PASSWORD = "broker-pw-B8x1q"  # noqa: S105
SASL_USER, SASL_PASSWORD = "fstore-app", "sasl-pw-K4f9zQ"
REDIS_USER, REDIS_PASSWORD = "fstore-app", "redis-pw-R2d7wE"
WRONG_PASSWORD = "wrong-pw-W0n6xA"  # noqa: S105


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA every server's certificate chains to
    server_cert: Path  # 127.0.0.1 and localhost
    server_key: Path  # PKCS#8, as Kafka's PEM key store wants it
    client_cert: Path  # for the Redis that asks for one
    client_key: Path
    other_ca: Path  # a CA that signed nothing of ours: trusting it is trusting someone else


def _pkcs8(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA(organization_name="fstore tests")
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("fstore-client")
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem")
    found = Certs(*(folder / name for name in names))
    ca.cert_pem.write_to_path(str(found.ca))
    found.server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    found.server_key.write_bytes(_pkcs8(server.private_key_pem.bytes()))
    found.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    found.client_key.write_bytes(_pkcs8(client.private_key_pem.bytes()))
    trustme.CA().cert_pem.write_to_path(str(found.other_ca))
    return found


@dataclass(frozen=True)
class SecureServices:
    certs: Certs
    kafka: KafkaServer
    kafka_security: KafkaSecurity
    redis: RedisServer
    redis_security: RedisSecurity

    def kafka_settings(
        self, password: str = SASL_PASSWORD, ca: Path | None = None
    ) -> KafkaSettings:
        properties = self.kafka_security.client_properties(SASL_USER, password)
        if ca is not None:
            properties["ssl.ca.location"] = str(ca)
        return KafkaSettings(bootstrap=self.kafka.bootstrap, properties=properties)

    def redis_url(self, password: str = REDIS_PASSWORD, ca: Path | None = None) -> str:
        tls = {
            "ssl_certfile": str(self.certs.client_cert),
            "ssl_keyfile": str(self.certs.client_key),
        }
        if ca is not None:
            tls["ssl_ca_certs"] = str(ca)
        port = self.redis.config.redis_port
        return self.redis_security.url(port, REDIS_USER, password, tls=tls)

    def settings(self, root: Path, namespace: str, **serving: object) -> Settings:
        """Settings of a store in `root` on both servers, logged in with the right secrets."""
        return Settings(
            kafka=self.kafka_settings(),
            redis=RedisSettings(url=self.redis_url(), namespace=namespace),
            offline=OfflineSettings(root=root / "offline"),
            registry=RegistrySettings(path=root / "registry"),
            models=ModelsSettings(path=root / "models"),
            serving=ServingSettings(**serving),  # type: ignore[arg-type]
        )


@pytest.fixture(scope="session")
def secure(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServices]:
    for tool in ("java", "redis-server"):
        if shutil.which(tool) is None:
            unavailable(f"the security tests run a TLS Kafka and Redis: {tool} is not on PATH")
    config = ServicesSettings(
        state_dir=tmp_path_factory.mktemp("secure-services"),
        cache_dir=load_settings().services.cache_dir,  # the Kafka jars, resolved once
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        redis_port=free_port(),
    )
    kafka_security = KafkaSecurity(
        certs.server_cert,
        certs.server_key,
        certs.ca,
        {"broker": BROKER_PASSWORD, SASL_USER: SASL_PASSWORD},
    )
    redis_security = RedisSecurity(
        certs.server_cert,
        certs.server_key,
        certs.ca,
        {REDIS_USER: REDIS_PASSWORD},
        client_certificates=True,
    )
    kafka, redis = KafkaServer(config, kafka_security), RedisServer(config, redis_security)
    try:
        redis.start()
        kafka.start()
        yield SecureServices(certs, kafka, kafka_security, redis, redis_security)
    finally:
        kafka.stop()
        redis.stop()
