"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) from Maven jars.

No Docker engine and no Kafka package are needed: Maven resolves `org.apache.kafka:kafka_2.13`
and its dependencies into a cache directory once; the broker then runs on the machine's JDK
(`java -cp 'libs/*' kafka.Kafka server.properties`). The second start reuses the cache.

With a `KafkaSecurity` the client listener is SASL_SSL instead of PLAINTEXT: TLS with a PEM
certificate and key (Kafka reads PEM key stores since 2.7, so no keytool), and SCRAM-SHA-512
users whose credentials go into the metadata log when the storage is formatted (KRaft has no
ZooKeeper to add them to later: `kafka-storage format --add-scram`).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess  # noqa: S404 - running java and mvn is this module's job
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from featurestore.config import ServicesSettings
from featurestore.errors import ServiceError
from featurestore.services.process import (
    ManagedProcess,
    ensure_port_free,
    port_open,
    tail,
    wait_until,
)

__all__ = [
    "SCRAM_MECHANISM",
    "KafkaSecurity",
    "KafkaServer",
    "KafkaStatus",
    "broker_answers",
]

HOST = "127.0.0.1"
MIN_JAVA = 17
# log4j-slf4j-impl binds Kafka's slf4j 1.x API to the log4j2 jars it already pulls in, so the
# broker writes a readable log instead of running silently.
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fstore</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
"""
_LOG4J = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""
_REGISTRY_FAILURE = re.compile(
    r"Could not transfer|UnknownHost|Connection refused|Connect to .* failed|"
    r"Network is unreachable|timed out",
)


SCRAM_MECHANISM = "SCRAM-SHA-512"
# Characters a SCRAM name or password may not hold: they delimit `--add-scram`'s
# `[name=...,password=...]` and the JAAS line `password="...";`.
_SCRAM_UNSAFE = re.compile(r'[\s",=\[\]\\;]')


@dataclass(frozen=True)
class KafkaSecurity:
    """A SASL_SSL client listener: TLS (the broker's certificate chain and its unencrypted
    PKCS#8 key, both PEM; `cafile` the CA clients and the broker itself verify it with) and
    SCRAM-SHA-512 users (name -> password). The first user is the broker's own, for the
    connections it makes to its own listener."""

    certfile: Path
    keyfile: Path
    cafile: Path
    users: Mapping[str, str] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.users:
            raise ServiceError("KafkaSecurity needs at least one SCRAM user (the broker's own)")
        for name, password in self.users.items():
            if not name or not password or _SCRAM_UNSAFE.search(name + password):
                raise ServiceError(
                    f"SCRAM user {name!r}: a name and password must be non-empty, without "
                    "spaces or any of \",=[]\\; (they delimit the broker's credential syntax)"
                )
        head = self.keyfile.read_text(errors="replace")[:64] if self.keyfile.exists() else ""
        if "-----BEGIN PRIVATE KEY-----" not in head:
            raise ServiceError(
                f"{self.keyfile} must be an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE "
                "KEY-----), the form Kafka's PEM key store reads; convert one with "
                "`openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"
            )

    def client_properties(self, user: str, password: str | None = None) -> dict[str, str]:
        """The librdkafka properties (`kafka.properties`) of a client logging in as `user`
        (with its own password unless `password` says otherwise)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": user,
            "sasl.password": self.users[user] if password is None else password,
            "ssl.ca.location": str(self.cafile),
        }


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    data_dir: Path
    log_file: Path


class KafkaServer:
    """One local broker, described entirely by `ServicesSettings`."""

    def __init__(self, config: ServicesSettings, security: KafkaSecurity | None = None) -> None:
        self.config = config
        self.security = security
        self.version = config.kafka_version
        self.home = config.state_dir / "kafka"
        self.data_dir = self.home / "data"
        self.properties_file = self.home / "server.properties"
        self.log_file = config.state_dir / "logs" / "kafka.log"
        self.libs = config.cache_dir / "kafka" / self.version / "libs"
        self.process = ManagedProcess("kafka", self.home / "kafka.pid", str(self.properties_file))

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.config.kafka_port}"

    def status(self) -> KafkaStatus:
        pid = self.process.pid()
        return KafkaStatus(
            pid is not None, pid, self.bootstrap, self.version, self.data_dir, self.log_file
        )

    def start(self, timeout: float = 120.0) -> bool:
        """Start the broker and wait until it answers a metadata request.

        Returns False when it was already running (then nothing is done).
        """
        if self.process.pid() is not None:
            return False
        java = _java()
        self.ensure_jars()
        for port in (self.config.kafka_port, self.config.kafka_controller_port):
            ensure_port_free("Kafka", HOST, port)
        self._write_config()
        self._format_storage(java)
        proc = self.process.start(
            [
                java,
                f"-Xms{self.config.kafka_heap}",
                f"-Xmx{self.config.kafka_heap}",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp",
                f"{self.libs}/*",
                "kafka.Kafka",
                str(self.properties_file),
            ],
            self.log_file,
            cwd=self.home,
        )
        wait_until(self._answers, timeout, f"Kafka {self.version}", self.log_file, proc)
        return True

    def stop(self) -> bool:
        return self.process.stop()

    def ensure_jars(self) -> Path:
        """Resolve the broker's jars with Maven into the cache, once per Kafka version."""
        done = self.libs / ".complete"
        if done.exists():
            return self.libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError(
                "Maven (mvn) is needed once to download Kafka's jars from Maven Central and was "
                "not found on PATH. Install it: `apt-get install maven` (Debian/Ubuntu) or "
                "`brew install maven` (macOS). Or point FSTORE_KAFKA_BOOTSTRAP at a running broker."
            )
        work = self.libs.parent
        shutil.rmtree(self.libs, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(_POM.format(version=self.version))
        log = work / "mvn.log"
        with log.open("wb") as out:
            result = subprocess.run(  # noqa: S603 - fixed argv
                [
                    mvn,
                    "-B",
                    "-f",
                    str(work / "pom.xml"),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={self.libs}",
                    "-DincludeScope=runtime",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            text = log.read_text(errors="replace")
            if _REGISTRY_FAILURE.search(text):
                raise ServiceError(
                    f"Maven could not download org.apache.kafka:kafka_2.13:{self.version} and its "
                    f"dependencies from the Maven registry (is Maven Central reachable? proxy "
                    f"settings in ~/.m2/settings.xml?). Full log: {log}\n{tail(log)}"
                )
            raise ServiceError(
                f"Maven failed to resolve Kafka {self.version}; log: {log}\n{tail(log)}"
            )
        done.write_text(self.version + "\n")
        return self.libs

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        port, controller = self.config.kafka_port, self.config.kafka_controller_port
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{controller}",
            "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # One member joins at a time in tests and the demo; do not wait 3 s for more.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        if self.security is not None:
            properties.update(self._secure_listener())
        text = "".join(f"{key}={value}\n" for key, value in properties.items())
        # The broker's own SCRAM password is in it (its JAAS line): readable by us alone.
        self.properties_file.touch(mode=0o600)
        os.chmod(self.properties_file, 0o600)
        self.properties_file.write_text(text)
        (self.home / "log4j2.properties").write_text(_LOG4J)

    def _secure_listener(self) -> dict[str, str]:
        """The properties that turn the client listener into SASL_SSL (the controller's stays
        PLAINTEXT on loopback: only the broker itself talks to it)."""
        assert self.security is not None  # noqa: S101 - called only with one
        port, controller = self.config.kafka_port, self.config.kafka_controller_port
        broker, password = next(iter(self.security.users.items()))
        login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        return {
            "listeners": f"SASL_SSL://{HOST}:{port},CONTROLLER://{HOST}:{controller}",
            "advertised.listeners": f"SASL_SSL://{HOST}:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                f'{login} required username="{broker}" password="{password}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self._keystore()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.security.cafile),
            "ssl.client.auth": "none",  # clients prove who they are with SCRAM
        }

    def _keystore(self) -> Path:
        """Kafka's PEM key store: the private key, then the certificate chain, in one file."""
        assert self.security is not None  # noqa: S101
        path = self.home / "keystore.pem"
        path.touch(mode=0o600)
        os.chmod(path, 0o600)
        path.write_text(
            self.security.keyfile.read_text().rstrip()
            + "\n"
            + self.security.certfile.read_text().rstrip()
            + "\n"
        )
        return path

    def _format_storage(self, java: str) -> None:
        """Format the log directory once, with a cluster id generated on first start."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = _cluster_id()
        result = subprocess.run(  # noqa: S603 - fixed argv
            [
                java,
                "-cp",
                f"{self.libs}/*",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.properties_file),
                *self._scram_arguments(),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            output = f"{result.stdout}{result.stderr}"
            for password in self.security.users.values() if self.security else ():
                output = output.replace(password, "***")  # the tool may echo its arguments
            raise ServiceError(f"formatting Kafka storage in {self.data_dir} failed:\n{output}")

    def _scram_arguments(self) -> list[str]:
        if self.security is None:
            return []
        arguments = []
        for name, password in self.security.users.items():
            arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        return arguments

    def _answers(self) -> bool:
        properties = None
        if self.security is not None:
            properties = self.security.client_properties(next(iter(self.security.users)))
        return port_open(HOST, self.config.kafka_port) and broker_answers(
            self.bootstrap, properties
        )


def broker_answers(bootstrap: str, properties: dict[str, str] | None = None) -> bool:
    """True when a broker at `bootstrap` answers a metadata request with a cluster id."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, **(properties or {}), "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=2)
    except KafkaException:  # no broker yet, or it is still starting
        return False
    return metadata.cluster_id is not None and len(metadata.brokers) > 0


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            f"Java {MIN_JAVA}+ is needed to run the Kafka broker and was not found on PATH. "
            "Install it: `apt-get install openjdk-17-jre-headless` (Debian/Ubuntu) or "
            "`brew install openjdk@17` (macOS)."
        )
    result = subprocess.run(  # noqa: S603 - fixed argv
        [java, "-version"], capture_output=True, text=True, check=False
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise ServiceError(
            f"could not read the Java version from `{java} -version`: {result.stderr}"
        )
    major = int(match.group(1))
    if major == 1:  # "1.8.0" style
        major = int(match.group(2) or 0)
    if major < MIN_JAVA:
        raise ServiceError(
            f"Kafka 4 needs Java {MIN_JAVA}+, but {java} is Java {major}. "
            "Install `openjdk-17-jre-headless` and put it first on PATH."
        )
    return java


def _cluster_id() -> str:
    """A base64url UUID, as `kafka-storage random-uuid` makes. One starting with '-' would read
    as an option to the storage tool, so those are drawn again (Kafka's own tool does the same)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
