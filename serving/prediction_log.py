"""The prediction log: every scored row, as one JSON record on a Kafka topic.

A request only appends its scored groups to a bounded in-memory queue (a lock and an append);
a background thread turns them into records and hands them to a confluent-kafka Producer, and
serves its delivery reports. The thread is woken by the first batch after a drain and lets the
next few join it for a few milliseconds: one wake-up per burst, not one per request. When the
queue holds `prediction_log_queue` records, new ones are dropped and counted — the log never
slows or fails a response, whether Kafka is slow or down.
Records of one entity share a message key, so they stay in order on one partition.

A record: {"request_id", "at" (UTC, ISO 8601), "model", "version", "alias", "role"
("served" | "shadow"), "entities": {join key: value}, "features": {name: value | null},
"score"}.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from featurestore.config import KafkaSettings
from serving.metrics import ServingMetrics

__all__ = ["LogBatch", "LogGroup", "PredictionLog"]

log = logging.getLogger(__name__)

SERVED = "served"
SHADOW_ROLE = "shadow"
_IDLE_POLL_S = 0.1  # how often the thread serves delivery reports when no record comes
# How long the first batch waits for others (well under the producer's linger.ms of 20): at
# saturation a wake-up per request cost the serving process more than producing the record.
_GATHER_S = 0.005
_FLUSH_S = 10.0  # how long shutdown waits, by default, for Kafka to take what is queued


@dataclass(frozen=True)
class LogGroup:
    version: int
    alias: str
    names: tuple[str, ...]
    rows: npt.NDArray[np.intp]  # positions in the request's entity lists
    matrix: npt.NDArray[np.float64]  # the feature vectors scored, one row per position
    scores: npt.NDArray[np.float64]


@dataclass(frozen=True)
class LogBatch:
    request_id: str
    at: datetime
    model: str
    role: str
    entities: Mapping[str, Sequence[Any]]
    key_columns: tuple[str, ...]  # join keys that make the message key
    groups: tuple[LogGroup, ...]

    @property
    def size(self) -> int:
        return sum(len(group.rows) for group in self.groups)

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, JSON value) of each row's record."""
        at = self.at.isoformat()
        columns = list(self.entities.items())
        for group in self.groups:
            matrix, scores = group.matrix.tolist(), group.scores.tolist()
            for i, row in enumerate(group.rows.tolist()):
                entities = {key: values[row] for key, values in columns}
                key = "|".join(str(entities[k]) for k in self.key_columns if k in entities)
                record = {
                    "request_id": self.request_id,
                    "at": at,
                    "model": self.model,
                    "version": group.version,
                    "alias": group.alias,
                    "role": self.role,
                    "entities": entities,
                    # orjson writes NaN (a missing feature) as null.
                    "features": dict(zip(group.names, matrix[i], strict=True)),
                    "score": scores[i],
                }
                yield key.encode(), orjson.dumps(record)


class PredictionLog:
    """Queue of scored batches and the thread that produces them to Kafka. Topic "" disables it."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        capacity: int,
        metrics: ServingMetrics,
        flush_s: float = _FLUSH_S,
    ) -> None:
        self.kafka = kafka
        self.flush_s = flush_s
        self.topic = topic
        self.capacity = capacity
        self.metrics = metrics
        self._queue: deque[LogBatch] = deque()
        self._queued = 0  # records in _queue
        self._ready = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.topic)

    def submit(self, batch: LogBatch) -> None:
        """Queue a batch, or drop and count it when the queue is full; never blocks on Kafka."""
        if not self.enabled:
            return
        size = batch.size
        with self._ready:
            if self._queued + size > self.capacity or self._stopping:
                self.metrics.log_dropped.labels("queue_full").inc(size)
                return
            if not self._queue:
                self._ready.notify()  # the thread may sleep; a non-empty queue has woken it
            self._queue.append(batch)
            self._queued += size

    def start(self) -> None:
        if not self.enabled:
            return
        # The producer connects in the background: Kafka being down at start fails nothing.
        self._producer = Producer(
            self.kafka.client_config(
                **{
                    "linger.ms": 20,
                    "compression.type": "lz4",
                    "enable.idempotence": False,  # a duplicate log line beats a stalled queue
                    "client.id": "fstore-serve-prediction-log",
                    # A Python callback per delivered record would cost the serving process
                    # more than the record itself: only failures are reported.
                    "on_delivery": self._delivered,
                    "delivery.report.only.error": True,
                    "logger": log,
                }
            )
        )
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fstore-prediction-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Send what is queued, flush the producer (bounded wait), and stop the thread."""
        if self._thread is None:
            return
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join(timeout=self.flush_s + 5)
        self._thread = None

    def _run(self) -> None:
        producer = self._producer
        assert producer is not None  # noqa: S101 - set by start()
        while True:
            with self._ready:
                if not self._queue and not self._stopping:
                    self._ready.wait(_IDLE_POLL_S)
                gather = bool(self._queue) and not self._stopping
            if gather:
                time.sleep(_GATHER_S)  # lock released: requests go on queueing
            with self._ready:
                batches = list(self._queue)
                self._queue.clear()
                self._queued = 0
                stopping = self._stopping
            for batch in batches:
                self._produce(producer, batch)
            producer.poll(0)
            if stopping and not batches:
                break
        left = producer.flush(self.flush_s)
        if left:
            log.warning("prediction log: %d records not delivered at shutdown", left)
            self.metrics.log_dropped.labels("shutdown").inc(left)

    def _produce(self, producer: Producer, batch: LogBatch) -> None:
        handed = 0
        for key, value in batch.records():
            try:
                producer.produce(self.topic, value, key=key)
                handed += 1
            except BufferError:
                # librdkafka's own queue is full (Kafka slow or away): give it a moment once.
                producer.poll(0.05)
                try:
                    producer.produce(self.topic, value, key=key)
                    handed += 1
                except BufferError:
                    self.metrics.log_dropped.labels("kafka_queue_full").inc()
            except KafkaException as exc:
                log.warning("prediction log: record refused: %s", exc)
                self.metrics.log_dropped.labels("kafka_error").inc()
        self.metrics.log_sent.inc(handed)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            log.warning("prediction log: record not delivered: %s", err)
            self.metrics.log_dropped.labels("kafka_error").inc()
