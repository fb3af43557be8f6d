"""Kafka for the demo: publish records, read a topic, know its end, delete the run's topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from demo.errors import DemoError
from featurestore.config import KafkaSettings

__all__ = ["TopicReader", "create_topics", "delete_topics", "end_offsets", "publish"]

_PROGRESS_EVERY = 5_000
_QUIET = {"log_level": 3}  # errors only: no info lines about the admin client's own queue


def create_topics(kafka: KafkaSettings, partitions: dict[str, int]) -> None:
    """Create the run's topics (name -> partitions); they are new, as the run is."""
    admin = AdminClient(kafka.client_config(**_QUIET))
    new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in partitions.items()]
    for name, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            raise DemoError(
                f"could not create topic {name!r} on {kafka.bootstrap}: {exc.args[0].str()}",
                "check that the broker is up and lets this client create topics",
            ) from exc


def publish(
    kafka: KafkaSettings,
    topic: str,
    records: Iterable[tuple[bytes, bytes]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send (key, value) records; returns how many, once Kafka has every one of them."""
    producer = Producer(
        kafka.client_config(
            **{"linger.ms": 20, "enable.idempotence": True, "compression.type": "lz4"}
        )
    )
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err.str())

    sent = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.05)
        sent += 1
        if sent % _PROGRESS_EVERY == 0:
            producer.poll(0)
            if progress is not None:
                progress(_PROGRESS_EVERY)
    remaining = producer.flush(60)
    if progress is not None:
        progress(sent % _PROGRESS_EVERY)
    if remaining or errors:
        raise DemoError(
            f"{remaining} records undelivered and {len(errors)} failed to {topic!r} on "
            f"{kafka.bootstrap}: {errors[:3]}",
            "check that the broker is up and accepts writes (its log, or `fstore services status`)",
        )
    return sent


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """Partition -> the offset the next record will get (0 for an empty partition)."""
    consumer = Consumer(kafka.client_config(**{"group.id": f"fstore-demo-{uuid.uuid4().hex}"}))
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is not None:
            raise DemoError(f"cannot read topic {topic!r}: {metadata.error.str()}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in sorted(metadata.partitions)
        }
    finally:
        consumer.close()


class TopicReader:
    """Reads a topic from its start, without a consumer group (nothing is committed)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer(
            kafka.client_config(
                **{
                    "group.id": f"fstore-demo-reader-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                }
            )
        )
        metadata = self.consumer.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is not None:
            raise DemoError(f"cannot read topic {topic!r}: {metadata.error.str()}")
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
        )

    def poll(self, timeout: float = 0.5, batch: int = 10_000) -> list[dict[str, Any]]:
        """The JSON records that arrived, up to `batch` of them (waiting up to `timeout`)."""
        out = []
        for message in self.consumer.consume(num_messages=batch, timeout=timeout):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - librdkafka's name
                    continue
                raise DemoError(f"reading {self.topic!r}: {error}")
            value = message.value()
            if value is not None:
                out.append(orjson.loads(value))
        return out

    def read(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Exactly `count` records, or a DemoError after `timeout` seconds."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            if time.monotonic() > deadline:
                raise DemoError(f"only {len(out)} of {count} records came from {self.topic!r}")
            out.extend(self.poll())
        return out

    def close(self) -> None:
        self.consumer.close()


def delete_topics(kafka: KafkaSettings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (the run's own)."""
    admin = AdminClient(kafka.client_config(**_QUIET))
    names = [name for name in admin.list_topics(timeout=30).topics if name.startswith(prefix)]
    if not names:
        return []
    for name, future in admin.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            raise DemoError(f"could not delete topic {name!r}: {exc.args[0].str()}") from exc
    return names
