"""The ingest benchmark's workload: the feature view, the generated events, producing them.

bench/serving.py and bench/monitor.py produce through it too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from featurestore.config import KafkaSettings
from featurestore.definitions import (
    Aggregation,
    Entity,
    FeatureView,
    Function,
    KafkaSource,
    ValueType,
)

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: event times of the replayed day start here
DAY_MS = 86_400_000
TILE_MS = 60_000
WINDOWS = {"10m": 10, "1h": 60, "24h": 1440}  # in tiles
CHUNK = 50_000


def make_view(name: str, topic: str, percentiles: bool = False, last_n: int = 0) -> FeatureView:
    """The workload's view; `percentiles` adds p50/p90/p99 of `amount` over every window (the
    `--percentiles` variant of bench/ingest.py: 9 more features, sketches per tile), `last_n`
    the `last_n` newest amounts over 1h (`--last-n`)."""
    source = KafkaSource(
        name=f"{name}_events",
        topic=topic,
        timestamp_field="ts",
        schema={"user_id": ValueType.STRING, "amount": ValueType.FLOAT64},
    )
    windows = list(WINDOWS)
    return FeatureView(
        name=name,
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=source,
        tile="1m",
        allowed_lateness="5m",
        aggregations=[
            Aggregation(function=Function.COUNT, windows=windows),
            *(
                Aggregation(column="amount", function=function, windows=windows)
                for function in (Function.SUM, Function.MEAN, Function.MAX)
            ),
            *(
                [
                    Aggregation(
                        column="amount",
                        function=Function.APPROX_PERCENTILE,
                        windows=windows,
                        percentiles=[0.5, 0.9, 0.99],
                    )
                ]
                if percentiles
                else []
            ),
            *(
                [Aggregation(column="amount", function=Function.LAST_N, windows=["1h"], n=last_n)]
                if last_n
                else []
            ),
        ],
    )


@dataclass
class Events:
    """The generated events of one chunk, as columns and as Kafka (value, key) pairs."""

    user: np.ndarray
    ts_ms: np.ndarray
    amount: np.ndarray

    def payloads(self) -> Iterator[tuple[bytes, bytes]]:
        stamps = np.datetime_as_string(self.ts_ms.astype("datetime64[ms]"), unit="ms")
        for user, amount, stamp in zip(
            self.user.tolist(), self.amount.tolist(), stamps, strict=True
        ):
            key = f"u{user:05d}"
            value = f'{{"user_id":"{key}","amount":{amount:.2f},"ts":"{stamp}Z"}}'
            yield value.encode(), key.encode()


def generate(first: int, count: int, users: int, per_day: int, seed: int) -> Iterator[Events]:
    """Events `first`..`first + count`: `per_day` a day in event time, up to 2 s out of order.

    Deterministic for a seed, chunk by chunk, so the RSS run can extend the topic later.
    """
    for low in range(first, first + count, CHUNK):
        high = min(low + CHUNK, first + count)
        rng = np.random.default_rng([seed, low])
        index = np.arange(low, high, dtype=np.int64)
        ts = START_MS + index * DAY_MS // per_day + rng.integers(0, 2_000, high - low)
        yield Events(
            user=rng.integers(0, users, high - low),
            ts_ms=ts,
            amount=np.round(rng.gamma(2.0, 25.0, high - low), 2),
        )


def producer(kafka: KafkaSettings, **extra: Any) -> Producer:
    return Producer(kafka.client_config(**{"enable.idempotence": True, **extra}))


def send(out: Producer, topic: str, value: bytes, wait: float = 0.05, **options: Any) -> None:
    """Produce one message; while the client's queue is full, serve delivery reports for up to
    `wait` s and try again (a benchmark's producer outruns the broker on purpose)."""
    while True:
        try:
            out.produce(topic, value, **options)
            return
        except BufferError:
            out.poll(wait)


def produce(kafka: KafkaSettings, topic: str, chunks: Iterator[Events]) -> tuple[int, Events]:
    """Produce every chunk, batched for throughput; returns the count and the columns."""
    out = producer(
        kafka, **{"linger.ms": 50, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000}
    )
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err.str())

    count = 0
    kept: list[Events] = []
    for chunk in chunks:
        kept.append(chunk)
        for value, key in chunk.payloads():
            send(out, topic, value, key=key, on_delivery=delivered)
            count += 1
        out.poll(0)
    if out.flush(120) or failed:
        raise RuntimeError(f"producing to {topic} failed: {failed[:3]}")
    columns = Events(
        np.concatenate([c.user for c in kept]),
        np.concatenate([c.ts_ms for c in kept]),
        np.concatenate([c.amount for c in kept]),
    )
    return count, columns
