"""The smoke pipeline: JSON events -> Kafka -> consumer group -> Redis, read back and checked.

It proves the wiring (brokers, topics, consumer groups, Redis pipelines) before any feature logic
runs; `fstore demo` and the first integration test both use it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, Producer

from featurestore.config import KafkaSettings
from streaming.errors import StreamingError

BATCH = 1_000


@dataclass(frozen=True)
class SmokeResult:
    produced: int
    consumed: int
    seconds: float


def make_events(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` card events for 100 users, one second apart, deterministic for a seed."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "event_id": i,
            "user_id": f"user-{rng.randrange(100)}",
            "amount": round(rng.uniform(1, 500), 2),
            "ts": (start + timedelta(seconds=i)).isoformat(),
        }
        for i in range(count)
    ]


def produce(kafka: KafkaSettings, topic: str, events: list[dict[str, Any]]) -> None:
    """Publish events as JSON, keyed by user so one user's events share a partition."""
    producer = Producer(kafka.client_config(**{"linger.ms": 5, "enable.idempotence": True}))
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err.str())

    for event in events:
        while True:
            try:
                producer.produce(
                    topic, orjson.dumps(event), key=event["user_id"], on_delivery=on_delivery
                )
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise StreamingError(
            f"{remaining} events undelivered, {len(errors)} failed to {topic!r} on "
            f"{kafka.bootstrap}: {errors[:3]}"
        )


def consume_into_redis(
    kafka: KafkaSettings,
    client: redis.Redis,
    topic: str,
    group: str,
    key_prefix: str,
    expected: int,
    timeout: float = 60.0,
) -> int:
    """Copy `expected` events into Redis hashes `{prefix}event:{id}`, committing after each batch.

    Offsets are committed only once the batch is in Redis: a crash replays it (at-least-once),
    and the writes are idempotent, so the outcome is the same.
    """
    consumer = Consumer(
        kafka.client_config(
            **{
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    consumed, deadline = 0, time.monotonic() + timeout
    try:
        while consumed < expected:
            if time.monotonic() > deadline:
                raise StreamingError(
                    f"only {consumed} of {expected} events arrived from {topic!r} in {timeout:.0f}s"
                )
            messages = consumer.consume(num_messages=BATCH, timeout=0.5)
            pipe = client.pipeline(transaction=False)
            for message in messages:
                if message.error() is not None:
                    raise StreamingError(f"consuming {topic!r}: {message.error()}")
                value = message.value()
                if value is None:
                    raise StreamingError(f"{topic!r} holds an empty message at {message.offset()}")
                event = orjson.loads(value)
                pipe.hset(
                    f"{key_prefix}event:{event['event_id']}",
                    mapping={
                        "user_id": event["user_id"],
                        "amount": repr(event["amount"]),
                        "ts": event["ts"],
                        "partition": str(message.partition()),
                        "offset": str(message.offset()),
                    },
                )
            if messages:
                pipe.execute()
                consumer.commit(asynchronous=False)
                consumed += len(messages)
    finally:
        consumer.close()
    return consumed


def read_back(client: redis.Redis, key_prefix: str, count: int) -> list[dict[str, Any]]:
    """The events `consume_into_redis` stored, in event-id order, in their original shape."""
    pipe = client.pipeline(transaction=False)
    for event_id in range(count):
        pipe.hgetall(f"{key_prefix}event:{event_id}")
    rows: list[dict[bytes, bytes]] = pipe.execute()
    return [
        {
            "event_id": event_id,
            "user_id": row[b"user_id"].decode(),
            "amount": float(row[b"amount"]),
            "ts": row[b"ts"].decode(),
        }
        if row
        else {}
        for event_id, row in enumerate(rows)
    ]
