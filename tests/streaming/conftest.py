"""Helpers for worker tests: a feature view on a fresh topic, publishing with known offsets."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from featurestore.config import KafkaSettings, OfflineSettings, RedisSettings, Settings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from streaming.topics import ensure_topic
from streaming.worker import Worker


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


@pytest.fixture
def settings(kafka: KafkaSettings, redis: str, tmp_path: Path, key_prefix: str) -> Settings:
    return Settings(
        kafka=kafka,
        redis=RedisSettings(url=redis, namespace=key_prefix.rstrip(":")),
        offline=OfflineSettings(root=tmp_path / "offline"),
    )


@pytest.fixture
def topic(kafka: KafkaSettings, topic_name: Callable[[str], str]) -> str:
    name = topic_name("txns")
    ensure_topic(kafka, name, partitions=3)
    return name


@pytest.fixture
def run_worker() -> Iterator[Callable[..., Worker]]:
    """Start workers in threads; each stops when `done(worker)` holds (or at teardown)."""
    threads: list[tuple[Worker, threading.Thread]] = []

    def start(worker: Worker, done: Callable[[Worker], bool]) -> Worker:
        thread = threading.Thread(target=worker.run, kwargs={"until": done}, daemon=True)
        thread.start()
        threads.append((worker, thread))
        return worker

    yield start
    for worker, thread in threads:
        worker.stop()
        thread.join(30)
