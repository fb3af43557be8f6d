"""`fstore services up | status | down` against real processes, run as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from featurestore.config import RegistrySettings, ServicesSettings, load_settings
from featurestore.definitions import Entity
from featurestore.errors import RegistryError, ServiceError
from featurestore.registry import Registry
from featurestore.repo import RepoContents
from featurestore.services import KafkaServer, PostgresServer, RedisServer, free_port

FSTORE = [sys.executable, "-c", "from featurestore.cli import main; main()"]


@pytest.fixture
def services_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "FSTORE_SERVICES_STATE_DIR": str(tmp_path / "state"),
        "FSTORE_SERVICES_KAFKA_PORT": str(free_port()),
        "FSTORE_SERVICES_KAFKA_CONTROLLER_PORT": str(free_port()),
        "FSTORE_SERVICES_REDIS_PORT": str(free_port()),
        "COLUMNS": "200",
    }
    yield env
    subprocess.run([*FSTORE, "services", "down"], env=env, capture_output=True, check=False)


def fstore(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [*FSTORE, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.integration
def test_up_status_down_twice_reuses_the_jar_cache(services_env: dict[str, str]) -> None:
    libs = KafkaServer(load_settings().services).libs  # the shared cache, outside the repo
    kafka_port, redis_port = (
        services_env["FSTORE_SERVICES_KAFKA_PORT"],
        services_env["FSTORE_SERVICES_REDIS_PORT"],
    )

    for round_ in range(2):
        out = fstore(services_env, "services", "up")
        assert f"started at 127.0.0.1:{kafka_port}" in out
        assert f"started at redis://127.0.0.1:{redis_port}/0" in out
        if round_ == 0:
            marker = (libs / ".complete").stat().st_mtime_ns
        else:
            assert (libs / ".complete").stat().st_mtime_ns == marker, "jars were resolved again"

        assert "already running" in fstore(services_env, "services", "up")
        status = fstore(services_env, "services", "status")
        assert status.count("running") == 2
        assert f"127.0.0.1:{kafka_port}" in status

        out = fstore(services_env, "services", "down")
        assert "Kafka stopped" in out and "Redis stopped" in out
        assert fstore(services_env, "services", "status").count("stopped") == 3  # + s3
        assert "was not running" in fstore(services_env, "services", "down")


def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    """A pid file pointing at a stranger (pid reuse, hand edits) is ignored and removed."""
    config = ServicesSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache")
    stranger = subprocess.Popen(["sleep", "60"])  # noqa: S607
    try:
        server = RedisServer(config)
        server.process.pid_file.parent.mkdir(parents=True)
        server.process.pid_file.write_text(f"{stranger.pid}\n")

        assert server.stop() is False
        assert stranger.poll() is None, "the stranger was signalled"
        assert not server.process.pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_missing_java_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no java, no mvn
    config = ServicesSettings(
        state_dir=tmp_path, cache_dir=tmp_path / "cache", kafka_port=free_port()
    )
    with pytest.raises(ServiceError, match="openjdk-17-jre-headless"):
        KafkaServer(config).start()


def test_unreachable_maven_registry_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Maven pointed at a dead mirror with an empty local repository: "registry unreachable"."""
    home = tmp_path / "home"
    (home / ".m2").mkdir(parents=True)
    (home / ".m2" / "settings.xml").write_text(
        "<settings><mirrors><mirror><id>dead</id><mirrorOf>*</mirrorOf>"
        f"<url>http://127.0.0.1:{free_port()}/maven2</url></mirror></mirrors></settings>"
    )
    monkeypatch.setenv("MAVEN_OPTS", f"-Duser.home={home}")
    config = ServicesSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ServiceError, match="could not download org.apache.kafka:kafka_2.13"):
        KafkaServer(config).ensure_jars()
    assert not (KafkaServer(config).libs / ".complete").exists()


def test_port_in_use_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = ServicesSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache", redis_port=port)
        with pytest.raises(ServiceError, match=f"127.0.0.1:{port} is already in use"):
            RedisServer(config).start()


def test_cluster_ids_never_read_as_options() -> None:
    """About 1 in 64 base64url UUIDs starts with '-', which kafka-storage parses as a flag."""
    from featurestore.services.kafka import _cluster_id

    ids = {_cluster_id() for _ in range(3000)}
    assert len(ids) == 3000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


@pytest.mark.integration
def test_up_with_postgres_runs_a_registry_server_that_keeps_its_data(
    services_env: dict[str, str], tmp_path: Path
) -> None:
    # A state dir the unprivileged server user can reach (pytest's temp root is 0700).
    state = Path(tempfile.mkdtemp(prefix="fstore-services-"))
    state.chmod(0o755)
    port = free_port()
    env = {**services_env, "FSTORE_SERVICES_STATE_DIR": str(state)}
    env["FSTORE_SERVICES_POSTGRES_PORT"] = str(port)
    server = PostgresServer(ServicesSettings(state_dir=state, postgres_port=port))
    try:
        out = fstore(env, "services", "up", "--postgres")
        assert f"PostgreSQL started at postgresql://fstore:***@127.0.0.1:{port}/fstore" in out
        password = server.password_file.read_text().strip()
        assert password not in out and password not in fstore(env, "services", "status")
        assert (state / "postgres" / "data").stat().st_mode & 0o777 == 0o700
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as an unprivileged user
            pid = server.process.pid()
            assert pid is not None and Path(f"/proc/{pid}").stat().st_uid != 0

        registry = Registry(RegistrySettings(url=server.url))
        registry.apply(RepoContents(entities={"user": Entity(name="user", join_keys=["id"])}))
        assert "postgres" in fstore(env, "services", "status")

        assert "PostgreSQL stopped" in fstore(env, "services", "down")
        with pytest.raises(RegistryError, match=r"fstore:\*\*\*@127.0.0.1"):
            Registry(RegistrySettings(url=server.url))
        assert server.start()  # the same cluster again (not through `up`: Kafka is slow to start)
        again = Registry(RegistrySettings(url=server.url))
        with again.db.connect() as conn:
            assert [row[0] for row in conn.execute("SELECT name FROM entities")] == ["user"]
    finally:
        server.stop()
        subprocess.run([*FSTORE, "services", "down"], env=env, capture_output=True, check=False)
        shutil.rmtree(state, ignore_errors=True)


def test_postgres_under_root_names_a_state_dir_its_user_cannot_reach(tmp_path: Path) -> None:
    """Under root PostgreSQL runs as an unprivileged user; a state dir below a folder closed to
    others (pytest's temp root is 0700, as /root is) is refused with what to do instead."""
    if os.geteuid() != 0:
        pytest.skip("only root hands PostgreSQL to another user")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    server = PostgresServer(ServicesSettings(state_dir=closed / "state", postgres_port=free_port()))
    with pytest.raises(ServiceError, match="FSTORE_SERVICES_STATE_DIR") as caught:
        server.start()
    assert "cannot reach" in str(caught.value) and server.process.pid() is None
