"""Servers the chaos tests may break: a Kafka broker of this package's own (restarted under a
running worker) and redis-servers of each test's own (restarted with and without their data,
stopped with SIGSTOP). The session's Kafka and Redis are shared and never touched that way.

Every test here is marked `chaos` (and `integration`): it runs in the default suite, as CI runs
it; `-m "not chaos"` leaves them out of a quick local run.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from featurestore.config import KafkaSettings, ServicesSettings, load_settings
from featurestore.services import KafkaServer, free_port
from tests.own_redis import OwnRedis

# The serving world (a model, its features in Redis) and a Redis of a test's own holding it.
from tests.serving.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    log_topic,
    own_redis_world,
    serving_settings,
    world,
)


class Broker:
    """A single-node broker on free ports, restartable on its data."""

    def __init__(self, state_dir: Path) -> None:
        services: ServicesSettings = load_settings().services.model_copy(
            update={
                "state_dir": state_dir,
                "kafka_port": free_port(),
                "kafka_controller_port": free_port(),
            }
        )
        self.server = KafkaServer(services)
        self.restarts = 0

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.server.bootstrap)

    def restart(self) -> None:
        """SIGTERM, then start again on the same data and ports."""
        self.server.stop()
        self.server.start(timeout=300)
        self.restarts += 1


@pytest.fixture(scope="session")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("chaos-kafka"))
    broker.server.start(timeout=300)
    try:
        yield broker
    finally:
        broker.server.stop()


class PersistentRedis(OwnRedis):
    """A redis-server of the test's own with the append-only file `fstore services` configures
    (`appendonly yes`, `appendfsync everysec`), restarted with its data or without it."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, "--appendonly", "yes", "--appendfsync", "everysec")
        self.restarts = self.wipes = 0

    def restart(self, wipe: bool) -> None:
        """A clean shutdown (the AOF is flushed), then a start; with `wipe`, its files are
        deleted in between, so it comes back empty as a Redis without persistence does."""
        self.stop(signal.SIGTERM)
        if wipe:
            shutil.rmtree(self.folder / "appendonlydir", ignore_errors=True)
            self.wipes += 1
        self.start()
        self.restarts += 1


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    server = PersistentRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)
