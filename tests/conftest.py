"""Session fixtures for real Kafka, Redis and PostgreSQL servers.

Where they come from, first match wins:
1. `FSTORE_KAFKA_BOOTSTRAP` / `FSTORE_REDIS_URL` point at running servers;
2. a Docker engine answers: testcontainers starts `apache/kafka` and `redis` images;
3. otherwise the project's own services module starts a broker from Maven jars and
   Debian's redis-server, on free loopback ports, in a temporary directory.
PostgreSQL: `FSTORE_TEST_POSTGRES_URL`, else Debian's server started here (`PostgresServer`).
Each test isolates itself with its own topic names (`topic_name`), Redis key prefix
(`key_prefix`) and PostgreSQL schema (`postgres_database`); nothing here is a mock. A test that
needs a tool this machine lacks calls `unavailable(why)`: a skip here, a failure under CI. A
test stuck past its timeout fails, and one stuck where no signal reaches it ends the run
(`pytest_timeout_set_timer`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis as redis_lib

from featurestore.config import (
    KafkaSettings,
    OfflineSettings,
    ServicesSettings,
    load_settings,
    url_without_password,
)
from featurestore.services import KafkaServer, PostgresServer, RedisServer, S3Server, free_port
from featurestore.services.redis_cluster import RedisCluster, free_ports
from tests.redis_target import CLUSTER, client_of, delete_matching

if CLUSTER:
    # Before any settings are built: every RedisSettings of the session talks cluster.
    os.environ["FSTORE_REDIS_CLUSTER"] = "true"

KAFKA_IMAGE_VERSION = "4.1.1"


def unavailable(reason: str) -> NoReturn:
    """A tool the test needs (a browser, a server build) cannot be had on this machine: the
    test skips, saying why - but under CI (`CI=true`, as .ci/run and CI services set it) it
    fails, since there a skip would pass a run in which the test proved nothing."""
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(
            f"{reason}\n(CI is set: a missing tool fails the run, it does not skip)", pytrace=False
        )
    pytest.skip(reason)


@dataclass
class Endpoint:
    address: str
    version: str
    origin: str
    stop: Callable[[], object] = field(default=lambda: None)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return result.returncode == 0


@pytest.fixture(scope="session")
def _local_services(tmp_path_factory: pytest.TempPathFactory) -> ServicesSettings:
    """ServicesSettings for servers this session starts itself: temp state, free ports."""
    return load_settings().services.model_copy(
        update={
            "state_dir": tmp_path_factory.mktemp("services"),
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            "redis_port": free_port(),
        }
    )


@pytest.fixture(scope="session")
def kafka(
    request: pytest.FixtureRequest, _local_services: ServicesSettings
) -> Iterator[KafkaSettings]:
    """Settings of a real Kafka broker for this test session."""
    endpoint = _kafka_endpoint(_local_services)
    request.config.stash[_ENDPOINTS].append(("Kafka", endpoint))
    try:
        yield KafkaSettings(bootstrap=endpoint.address)
    finally:
        endpoint.stop()


def _kafka_endpoint(services: ServicesSettings) -> Endpoint:
    if bootstrap := os.environ.get("FSTORE_KAFKA_BOOTSTRAP"):
        return Endpoint(bootstrap, "external", "FSTORE_KAFKA_BOOTSTRAP")
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer(f"apache/kafka:{KAFKA_IMAGE_VERSION}").with_kraft()
        container.start()
        return Endpoint(
            container.get_bootstrap_server(), KAFKA_IMAGE_VERSION, "testcontainers", container.stop
        )
    server = KafkaServer(services)
    server.start()
    return Endpoint(server.bootstrap, server.version, "local broker from Maven jars", server.stop)


@pytest.fixture(scope="session")
def redis(request: pytest.FixtureRequest, _local_services: ServicesSettings) -> Iterator[str]:
    """URL of a real Redis server for this test session."""
    endpoint = _redis_endpoint(_local_services)
    request.config.stash[_ENDPOINTS].append(("Redis", endpoint))
    try:
        yield endpoint.address
    finally:
        endpoint.stop()


def _redis_endpoint(services: ServicesSettings) -> Endpoint:
    if url := os.environ.get("FSTORE_REDIS_URL"):
        return Endpoint(url, "external", "FSTORE_REDIS_URL")
    if CLUSTER:
        # FSTORE_TEST_REDIS=cluster: three masters with a replica each, on free ports.
        cluster = RedisCluster(services.state_dir, free_ports(6), masters=3, replicas=1)
        cluster.start()
        return Endpoint(cluster.url, "cluster 3x2", "local redis-server cluster", cluster.stop)
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7")
        container.start()
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        return Endpoint(f"redis://{host}:{port}/0", "7", "testcontainers", container.stop)
    server = RedisServer(services)
    server.start()
    return Endpoint(server.url, server.status().version or "?", "local redis-server", server.stop)


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Topic names unique to this test: `topic_name("events")`."""
    test = re.sub(r"[^A-Za-z0-9._-]", "_", request.node.name)[:60]
    run = uuid.uuid4().hex[:8]
    return lambda base: f"test.{test}.{base}.{run}"


@pytest.fixture
def key_prefix(redis: str) -> Iterator[str]:
    """A Redis key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_matching(client_of(redis), f"{prefix}*")


@pytest.fixture
def redis_client(redis: str) -> redis_lib.Redis:
    return client_of(redis)


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a real PostgreSQL server for this test session (it holds its password)."""
    endpoint = _postgres_endpoint()
    request.config.stash[_ENDPOINTS].append(("PostgreSQL", endpoint))
    try:
        yield endpoint.address
    finally:
        endpoint.stop()


def _postgres_endpoint() -> Endpoint:
    if url := os.environ.get("FSTORE_TEST_POSTGRES_URL"):
        return Endpoint(url, "external", "FSTORE_TEST_POSTGRES_URL")
    # Not under pytest's temp root: that is closed to other users (0700), and under root the
    # server runs as the unprivileged `postgres` user, which must reach its data.
    state = Path(tempfile.mkdtemp(prefix="fstore-postgres-"))
    state.chmod(0o755)
    server = PostgresServer(ServicesSettings(state_dir=state, postgres_port=free_port()))
    if server.status().version is None and os.geteuid() != 0:
        unavailable("PostgreSQL's server binaries are missing: apt-get install postgresql")
    server.start()

    def stop() -> None:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)

    return Endpoint(server.url, server.status().version or "?", "local postgres", stop)


@pytest.fixture
def postgres_database(postgres: str) -> Iterator[str]:
    """A URL whose tables land in a fresh schema of this test's own (dropped afterwards)."""
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    parts = urlsplit(postgres)
    option = "options=" + quote(f"-csearch_path={schema}", safe="")
    query = f"{parts.query}&{option}" if parts.query else option
    yield urlunsplit(parts._replace(query=query))
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest) -> str | None:
    """Each registry test runs on both backends: None (a SQLite file), then a PostgreSQL URL."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_database")
    return url


@dataclass
class S3Target:
    """A real S3 server for this session and one bucket on it; `settings()` makes an offline
    root under a prefix of its own (so tests never see each other's objects)."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def settings(self, **overrides: Any) -> OfflineSettings:
        fields: dict[str, Any] = {
            "root": f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}",
            "s3_endpoint": self.endpoint,
            "s3_region": "us-east-1",
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
        }
        return OfflineSettings(**{**fields, **overrides})


@pytest.fixture(scope="session")
def s3(request: pytest.FixtureRequest, _local_services: ServicesSettings) -> Iterator[S3Target]:
    """A real S3 server: `FSTORE_TEST_S3_ENDPOINT` (with `FSTORE_TEST_S3_ACCESS_KEY` and
    `FSTORE_TEST_S3_SECRET_KEY`, its bucket created if missing), else SeaweedFS started here on
    free loopback ports (built from the Go module proxy on first use: `make seaweedfs`)."""
    import pyarrow.fs as pafs

    from featurestore.errors import ServiceError
    from featurestore.offline.storage import s3_filesystem

    bucket = "fstore-tests"
    if endpoint := os.environ.get("FSTORE_TEST_S3_ENDPOINT"):
        target = S3Target(
            endpoint,
            os.environ.get("FSTORE_TEST_S3_ACCESS_KEY", ""),
            os.environ.get("FSTORE_TEST_S3_SECRET_KEY", ""),
            bucket,
        )
        stop: Callable[[], object] = lambda: None  # noqa: E731
        origin, version = "FSTORE_TEST_S3_ENDPOINT", "external"
    else:
        server = S3Server(_local_services.model_copy(update={"s3_port": free_port()}))
        try:
            server.start()
        except ServiceError as exc:
            unavailable(f"no S3 server for the object-store tests: {exc}")
        credentials = server.credentials()
        target = S3Target(
            server.endpoint,
            credentials.access_key,
            credentials.secret_key.get_secret_value(),
            bucket,
        )
        stop, origin, version = (
            server.stop,
            "local SeaweedFS built from the Go proxy",
            server.version,
        )
    fs = s3_filesystem(target.settings(), create_buckets=True)
    if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
        fs.create_dir(bucket)
    request.config.stash[_ENDPOINTS].append(
        ("S3", Endpoint(target.endpoint, version, origin, stop))
    )
    try:
        yield target
    finally:
        stop()


_ENDPOINTS = pytest.StashKey[list[tuple[str, Endpoint]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ENDPOINTS] = []


# Tests that start single Redis servers of their own to inject faults into (restarts, flushes,
# BUSY/LOADING/READONLY replies, a server that is down), or that name an unreachable host:
# they test one server, and the cluster target (FSTORE_TEST_REDIS=cluster) skips them. The
# cluster's own faults are tests/featurestore/test_cluster_failover.py's.
_ONE_SERVER_ONLY = (
    "tests/streaming/ingest/test_outage.py::test_worker_survives_a_redis_restart",
    "tests/streaming/ingest/test_state_loss.py::",
    "tests/serving/test_canary_shadow_reload.py::test_a_failing_shadow_changes_no_response",
    "tests/serving/test_client.py::",  # freezes a Redis of its own (the client's 503 retries)
    "tests/serving/test_drift_route.py::test_drift_answers_503_when_redis_is_down",
    "tests/serving/test_errors.py::test_redis_down_answers_503",
    "tests/serving/test_errors.py::test_an_outage_answer_does_not_show_the_redis_password",
    "tests/serving/test_fastpath.py::test_redis_down_answers_503_alike",
    "tests/serving/test_redis_replies.py::",
    "tests/serving/test_redis_secrets.py::",
    "tests/serving/test_shedding.py::test_a_stopped_redis_answers_503_within_the_deadline",
    "tests/serving/test_shedding.py::test_past_max_in_flight_a_request_is_refused_at_once",
    "tests/serving/test_ui.py::test_an_unreachable_redis_is_an_online_store_error",
    "tests/serving/test_unscored.py::test_an_empty_redis_scores_nothing",
    "tests/featurestore/test_redis_errors.py::",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not CLUSTER:
        return
    skip = pytest.mark.skip(reason="injects faults into single Redis servers of its own")
    for item in items:
        if item.nodeid.startswith(_ONE_SERVER_ONLY):
            item.add_marker(skip)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    for name, endpoint in config.stash[_ENDPOINTS]:
        terminalreporter.write_line(
            f"{name} {endpoint.version} at {url_without_password(endpoint.address)} "
            f"({endpoint.origin})"
        )


# How long after its timeout a test that the timeout's signal could not stop ends the run.
TIMEOUT_BACKSTOP_S = 30


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's two methods together, so that a stuck test never hangs the run.

    At the timeout, SIGALRM fails the test and the run goes on: that frees a test waiting in
    Python or on a socket (a Redis read). A call blocked inside C (librdkafka's `consume()` or
    `flush()` without a timeout) never sees the signal, so `TIMEOUT_BACKSTOP_S` later a thread
    dumps every stack, stops the servers this session started, and ends the run with status 1
    (pytest-timeout's `thread` method, which alone would end the run at the first timeout).
    """
    import pytest_timeout

    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own way

    def fail(_signum: int, _frame: FrameType | None) -> None:
        __tracebackhide__ = True
        pytest_timeout.timeout_sigalrm(item, settings)

    def end_run() -> None:
        for _name, endpoint in item.config.stash[_ENDPOINTS]:
            with contextlib.suppress(Exception):
                endpoint.stop()
        pytest_timeout.timeout_timer(item, settings)  # dumps the stacks, then os._exit(1)

    backstop = threading.Timer(settings.timeout + TIMEOUT_BACKSTOP_S, end_run)
    backstop.name = f"timeout backstop {item.nodeid}"
    backstop.daemon = True

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        backstop.cancel()

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # what pytest-timeout cancels
    signal.signal(signal.SIGALRM, fail)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    backstop.start()
    return True
