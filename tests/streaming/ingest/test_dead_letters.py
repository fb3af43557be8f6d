"""A dead letter that cannot hold the original bytes: a truncated body, the original size and
where the message was, never an exception.

Two real refusals on real Kafka: a message of 1,000,001 bytes (the source topic takes it, the
worker's producer refuses to send it: librdkafka's `message.max.bytes` is 1,000,000), and one
of 200,000 bytes that the dead-letter topic refuses (its `max.message.bytes` is 150,000; the
broker holds a whole record batch to it, so it must take the two truncated letters together).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from featurestore.config import Settings
from streaming.consume import TRUNCATED_BODY_BYTES
from streaming.ingest.worker import Worker
from streaming.topics import ensure_topic
from tests.streaming.conftest import make_view

pytestmark = pytest.mark.integration


def read_all(settings: Settings, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        settings.kafka.client_config(**{"group.id": f"{topic}.read", "enable.auto.commit": False})
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[Any] = []
        deadline = time.monotonic() + 60
        while len(found) < count and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                assert message.error() is None, message.error()
                found.append(message)
        return found
    finally:
        consumer.close()


def test_a_message_too_large_for_the_dead_letter_topic_is_dead_lettered_truncated(
    settings: Settings, topic_name: Callable[[str], str], run_worker: Callable[..., Worker]
) -> None:
    topic = topic_name("txns")
    ensure_topic(settings.kafka, topic, config={"max.message.bytes": "2000000"})
    ensure_topic(settings.kafka, f"{topic}.dlq", config={"max.message.bytes": "150000"})
    good = {"user_id": "u1", "amount": 1.0, "merchant": "m", "ts": "2026-03-01T12:00:00Z"}
    huge = b'{"pad": "' + b"x" * (1_000_001 - 11) + b'"}'
    large = b'{"pad": "' + b"y" * (200_000 - 11) + b'"}'
    assert (len(huge), len(large)) == (1_000_001, 200_000)
    producer = Producer(
        settings.kafka.client_config(**{"message.max.bytes": 2_000_000, "linger.ms": 5})
    )
    for value in (orjson.dumps(good), huge, large, orjson.dumps({**good, "amount": 2.0})):
        producer.produce(topic, value, key=b"u1", partition=0)
    assert producer.flush(60) == 0

    worker = Worker(
        settings, [(make_view(topic), 1)], group=f"{topic}.g", max_message_bytes=150_000
    )
    run_worker(worker, lambda w: w.counters.consumed >= 4)
    deadline = time.monotonic() + 60
    while worker.counters.consumed < 4 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert worker.counters.consumed == 4 and worker.counters.applied == 2
    assert worker.counters.dead_lettered == 2
    assert worker.loop.outbox.truncated == 2
    letters = read_all(settings, f"{topic}.dlq", 2)
    assert len(letters) == 2
    by_size = {dict(m.headers())["original.size"]: m for m in letters}
    for original, offset in ((huge, 1), (large, 2)):
        letter = by_size[str(len(original)).encode()]
        headers = dict(letter.headers())
        assert letter.value() == original[:TRUNCATED_BODY_BYTES]
        assert letter.key() == b"u1"
        assert headers["truncated"] == b"true"
        assert headers["source.topic"] == topic.encode()
        assert headers["source.partition"] == b"0"
        assert headers["source.offset"] == str(offset).encode()
        assert headers["reason"] in (b"oversized", b"too_large")
