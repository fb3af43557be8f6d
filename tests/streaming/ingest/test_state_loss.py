"""Issue 18's reproduction on real Kafka, with a Redis of the test's own: 1,000 events applied,
Redis restarted without its data (or flushed, under a running worker and under a stopped one),
100 more published. The online sum is 1,100 — every value equals the brute-force reference over
all 1,100 events —, the worker says in its log that it rebuilt, and counts it once. With the
append-only file that `fstore services` configures, a crash of redis-server loses nothing and
nothing is rebuilt.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from featurestore.config import (
    KafkaSettings,
    OfflineSettings,
    RedisSettings,
    Settings,
    load_settings,
)
from featurestore.definitions import FeatureView
from featurestore.online import OnlineStore, read_features
from featurestore.services import RedisServer, free_port
from featurestore.tiles import TileLayout
from streaming.ingest.metrics import WorkerCollector
from streaming.ingest.worker import Worker
from tests.own_redis import own_redis
from tests.streaming.conftest import (
    BASE,
    US,
    Published,
    as_published,
    assert_matches_reference,
    event_payload,
    make_view,
    publish,
)

pytestmark = pytest.mark.integration

USERS = [f"u{i}" for i in range(5)]


def amounts_of_one(first: int, count: int) -> list[dict[str, object]]:
    """Events of amount 1, a quarter second apart: all 1,100 within one 10-minute window."""
    return [
        {
            "user_id": USERS[i % len(USERS)],
            "amount": 1.0,
            "merchant": "m",
            "ts": (BASE + timedelta(seconds=i / 4)).isoformat(),
        }
        for i in range(first, first + count)
    ]


class Run:
    """One test's stream: its settings, view and published events."""

    def __init__(self, kafka: KafkaSettings, topic: str, redis_url: str, root: Path) -> None:
        self.settings = Settings(
            kafka=kafka,
            redis=RedisSettings(url=redis_url, namespace="state-loss"),
            offline=OfflineSettings(root=root / "offline"),
        )
        self.topic = topic
        self.view: FeatureView = make_view(topic)
        self.published: list[Published] = []

    def publish(self, count: int) -> None:
        events = amounts_of_one(len(self.published), count)
        where = publish(self.settings.kafka, self.topic, [event_payload(e) for e in events])
        self.published += as_published(events, where)

    def worker(self, check_s: float | None) -> Worker:
        worker = Worker(self.settings, [(self.view, 1)], group=f"{self.topic}.g", batch_size=300)
        worker.state_check_s = check_s
        return worker

    def online_sum(self) -> tuple[float, set[str]]:
        """The sum of amount_sum_10m over the users at the newest event, and the statuses."""
        newest = max(e.ts for e in self.published)
        store = OnlineStore(self.settings.redis)
        try:
            [got] = read_features(
                store, [(self.view.name, 1, TileLayout(self.view), USERS)], newest
            )
        finally:
            store.close()
        values = [features["amount_sum_10m"] for features in got]
        return sum(v.value or 0.0 for v in values), {v.status for v in values}

    def assert_all_applied(self) -> None:
        assert self.online_sum() == (len(self.published), {"ok"})
        newest = max(e.ts for e in self.published)
        for later_s in (0, 15 * 60):
            assert_matches_reference(
                self.settings, self.view, self.published, newest + later_s * US
            )


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s}s for {what}"
        time.sleep(0.05)


def rebuilds_metric(worker: Worker) -> float:
    [family] = [
        f for f in WorkerCollector(worker).collect() if f.name == "fstore_ingest_state_rebuilds"
    ]
    return float(family.samples[0].value)


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="fstore.writer")
    return caplog


def test_redis_restarted_without_its_data_is_rebuilt_from_the_log_before_going_on(
    kafka: KafkaSettings,
    topic: str,
    tmp_path: Path,
    run_worker: Callable[..., Worker],
    log: pytest.LogCaptureFixture,
) -> None:
    """The issue's reproduction, word for word: before the fix, the sum was 100, status ok."""
    with own_redis(tmp_path / "redis", "--appendonly", "no") as server:
        run = Run(kafka, topic, server.url, tmp_path)
        run.publish(1000)
        worker = run_worker(run.worker(check_s=0.2), lambda w: w.counters.consumed >= 1100)
        wait_for(lambda: worker.counters.consumed >= 1000, "the first 1,000 events")
        assert run.online_sum() == (1000, {"ok"})

        server.stop(signal.SIGTERM)  # a clean shutdown, but nothing saved: `save ""`, no AOF
        assert not list(server.folder.glob("*.rdb")) and not list(server.folder.glob("*.aof"))
        server.start()
        # The idle worker finds its epoch gone between polls, and rebuilds before any batch.
        wait_for(lambda: worker.counters.state_rebuilds == 1, "the rebuild")
        run.publish(100)
        wait_for(lambda: worker.counters.consumed >= 1100, "the last 100 events")

        run.assert_all_applied()
        assert worker.counters.state_rebuilds == 1 == rebuilds_metric(worker)
        assert "Redis holds no position" in log.text or "epoch marker is gone" in log.text
        assert "rebuilt from the offline log" in log.text
        assert worker.counters.applied == 1100


def test_redis_flushed_under_a_running_and_under_a_stopped_worker(
    kafka: KafkaSettings,
    topic: str,
    tmp_path: Path,
    run_worker: Callable[..., Worker],
    log: pytest.LogCaptureFixture,
) -> None:
    """Without the idle check: the merge of the next batch finds the epoch gone (the running
    worker); the assignment finds no positions while the log holds events (the next one)."""
    with own_redis(tmp_path / "redis", "--appendonly", "no") as server:
        run = Run(kafka, topic, server.url, tmp_path)
        run.publish(1000)
        running = run_worker(run.worker(check_s=None), lambda w: w.counters.consumed >= 1100)
        wait_for(lambda: running.counters.consumed >= 1000, "the first 1,000 events")
        server.client().flushall()
        run.publish(100)
        wait_for(lambda: running.counters.consumed >= 1100, "the next 100 events")
        running.stop()
        assert running.counters.state_rebuilds == 1
        assert "its epoch marker is gone" in log.text
        run.assert_all_applied()

        server.client().flushall()
        run.publish(100)
        restarted = run_worker(run.worker(check_s=None), lambda w: w.counters.consumed >= 100)
        wait_for(lambda: restarted.counters.consumed >= 100, "the last 100 events")
        # It rebuilt at assignment and resumed after the rebuilt positions, not from offset 0.
        assert restarted.counters.state_rebuilds == 1
        assert restarted.counters.consumed == 100
        assert "Redis holds no position of it" in log.text
        run.assert_all_applied()
        assert log.text.count("rebuilt from the offline log") == 2


def test_with_the_append_only_file_a_killed_redis_keeps_the_state_and_nothing_is_rebuilt(
    kafka: KafkaSettings,
    topic: str,
    tmp_path: Path,
    run_worker: Callable[..., Worker],
    log: pytest.LogCaptureFixture,
) -> None:
    services = load_settings().services.model_copy(
        update={"state_dir": tmp_path / "services", "redis_port": free_port()}
    )
    server = RedisServer(services)
    server.start()
    try:
        assert "appendonly yes" in server.config_file.read_text()
        run = Run(kafka, topic, server.url, tmp_path)
        run.publish(1000)
        worker = run_worker(run.worker(check_s=0.2), lambda w: w.counters.consumed >= 1100)
        wait_for(lambda: worker.counters.consumed >= 1000, "the first 1,000 events")

        pid = server.process.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: server.process.pid() is None, "redis-server to die")
        assert server.start()
        run.publish(100)
        wait_for(lambda: worker.counters.consumed >= 1100, "the last 100 events")
        time.sleep(0.5)  # a few idle checks after the restart

        run.assert_all_applied()
        assert worker.counters.state_rebuilds == 0 == rebuilds_metric(worker)
        assert "Redis lost" not in log.text
    finally:
        server.stop()
