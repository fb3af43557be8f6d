"""Helpers for worker tests: a feature view on a fresh topic, random streams published with
known offsets, and the comparison of online values with the brute-force reference."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from featurestore.config import KafkaSettings, OfflineSettings, RedisSettings, Settings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.online import OnlineStore, read_features
from featurestore.tiles import TileLayout
from streaming.ingest.worker import Worker
from streaming.topics import ensure_topic
from tests.reference import apply_lateness, newest_event, view_features

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = 1_000_000


def make_view(topic: str, name: str = "user_txn", lateness: str = "5m") -> FeatureView:
    source = KafkaSource(
        name="txns",
        topic=topic,
        timestamp_field="ts",
        schema={"user_id": "string", "amount": "float64", "merchant": "string"},
    )
    return FeatureView(
        name=name,
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=source,
        tile="1m",
        allowed_lateness=lateness,
        ttl="1h",
        aggregations=[
            Aggregation(function="count", windows=["10m", "1h"]),
            Aggregation(column="amount", function="sum", windows=["10m", "1h", "2h"]),
            Aggregation(column="amount", function="mean", windows=["1h"]),
            Aggregation(column="amount", function="min", windows=["2h"]),
            Aggregation(column="amount", function="max", windows=["10m", "2h"]),
            Aggregation(column="amount", function="stddev", windows=["1h"]),
            Aggregation(column="amount", function="last", windows=["2h"]),
        ],
    )


@dataclass
class Published:
    """An event as the reference model sees it: with its Kafka partition and offset."""

    ts: int
    partition: int
    offset: int
    values: dict[str, Any]


def publish(
    kafka: KafkaSettings, topic: str, payloads: list[tuple[bytes, bytes | None]]
) -> list[tuple[int, int]]:
    """Send (value, key) pairs; returns each one's (partition, offset) in input order."""
    producer = Producer(kafka.client_config(**{"enable.idempotence": True, "linger.ms": 5}))
    where: list[tuple[int, int]] = [(-1, -1)] * len(payloads)

    def delivered(index: int) -> Callable[[Any, Any], None]:
        def callback(err: Any, msg: Any) -> None:
            assert err is None, err
            where[index] = (msg.partition(), msg.offset())

        return callback

    for i, (value, key) in enumerate(payloads):
        producer.produce(topic, value, key=key, on_delivery=delivered(i))
        producer.poll(0)
    assert producer.flush(60) == 0
    return where


def event_payload(event: dict[str, Any]) -> tuple[bytes, bytes]:
    return orjson.dumps(event), str(event["user_id"]).encode()


def random_events(
    rng: random.Random, count: int, users: int, spacing_s: float = 2.0
) -> list[dict[str, object]]:
    """Mostly ordered events with jitter, some far out of order (late beyond 5 minutes)."""
    events = []
    for i in range(count):
        ts = BASE + timedelta(seconds=i * spacing_s + rng.uniform(-120, 120))
        if rng.random() < 0.04:
            ts -= timedelta(minutes=rng.uniform(6, 40))  # late for a 5-minute allowance
        if rng.random() < 0.05:
            ts = ts.replace(second=0, microsecond=0)  # exactly on a tile boundary
        events.append(
            {
                "user_id": f"u{rng.randrange(users)}",
                "amount": round(rng.uniform(-50, 500), 2),
                "merchant": f"m{rng.randrange(40)}",
                "ts": ts.isoformat(),
            }
        )
    return events


def as_published(events: list[dict[str, object]], where: list[tuple[int, int]]) -> list[Published]:
    """Events with the (partition, offset) that `publish` returned for them."""
    epoch, one_us = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)
    return [
        Published((datetime.fromisoformat(str(e["ts"])) - epoch) // one_us, p, o, e)
        for e, (p, o) in zip(events, where, strict=True)
    ]


def assert_matches_reference(
    settings: Settings,
    view: FeatureView,
    published: list[Published],
    as_of_us: int,
    version: int = 1,
) -> int:
    """Every feature of every user equals the brute-force value; returns how many compared."""
    layout = TileLayout(view)
    applied, _late = apply_lateness(published, view.lateness_us)
    by_user: dict[str, list[Any]] = {e.values["user_id"]: [] for e in published}
    for event in applied:
        by_user[event.values["user_id"]].append(event)
    users = sorted(by_user)
    [online] = read_features(
        OnlineStore(settings.redis), [(view.name, version, layout, users)], as_of_us
    )
    compared = 0
    for user, got in zip(users, online, strict=True):
        mine = by_user[user]
        want = view_features(mine, view, as_of_us)
        for name, expected in want.items():
            actual = got[name].value
            if expected is None:
                assert actual is None, (user, name, actual)
            else:
                assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9), (user, name)
            compared += 1
        if "amount_last_2h" in got:
            newest = newest_event(mine, 2 * 3600 * US, view.tile_us, as_of_us)
            assert got["amount_last_2h"].event_time_us == newest
    return compared


@pytest.fixture
def settings(kafka: KafkaSettings, redis: str, tmp_path: Path, key_prefix: str) -> Settings:
    return Settings(
        kafka=kafka,
        redis=RedisSettings(url=redis, namespace=key_prefix.rstrip(":")),
        offline=OfflineSettings(root=tmp_path / "offline"),
    )


@pytest.fixture(params=["local", "s3"])
def log_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """`settings` with the offline log in a local folder, or on a real S3 server."""
    if request.param == "local":
        return settings
    return settings.model_copy(update={"offline": request.getfixturevalue("s3").settings()})


@pytest.fixture
def topic(kafka: KafkaSettings, topic_name: Callable[[str], str]) -> str:
    name = topic_name("txns")
    ensure_topic(kafka, name, partitions=3)
    return name


class WorkerThreads:
    """Workers run in threads of the test: `run_worker(worker, done)` starts one, which stops
    when `done(worker)` holds; `run_worker.join(worker)` waits for that. A worker that raises
    fails the test with its own exception (at `join`, or at teardown): a worker thread must
    never die quietly while the test goes on waiting for counters that will not move."""

    def __init__(self) -> None:
        self.threads: dict[int, tuple[Worker, threading.Thread]] = {}
        self.errors: dict[int, BaseException] = {}

    def __call__(self, worker: Worker, done: Callable[[Worker], bool]) -> Worker:
        def run() -> None:
            try:
                worker.run(until=done)
            except BaseException as exc:  # re-raised in the test's thread
                self.errors[id(worker)] = exc

        thread = threading.Thread(target=run, name=f"worker {worker.group}", daemon=True)
        self.threads[id(worker)] = (worker, thread)
        thread.start()
        return worker

    def join(self, worker: Worker, timeout_s: float = 60) -> None:
        """Wait until `worker` has stopped by itself (its `done` held); raise what it raised."""
        _worker, thread = self.threads[id(worker)]
        thread.join(timeout_s)
        self.raise_error(worker)
        assert not thread.is_alive(), f"the worker did not finish within {timeout_s}s"

    def raise_error(self, worker: Worker) -> None:
        if (error := self.errors.pop(id(worker), None)) is not None:
            raise error

    def stop_all(self) -> None:
        for worker, _thread in self.threads.values():
            worker.stop()
        stuck = []
        for worker, thread in self.threads.values():
            thread.join(30)
            if thread.is_alive():
                stuck.append(worker.group)
        for worker, _thread in self.threads.values():
            self.raise_error(worker)
        assert not stuck, f"workers of {stuck} did not stop within 30 s of stop()"


@pytest.fixture
def run_worker() -> Iterator[WorkerThreads]:
    """Start workers in threads; each stops when `done(worker)` holds (or at teardown), and an
    exception in one fails the test (see `WorkerThreads`)."""
    threads = WorkerThreads()
    yield threads
    threads.stop_all()
