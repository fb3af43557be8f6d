"""The prediction log: every scored row, as one JSON record on a Kafka topic.

A request hands its records to a confluent-kafka Producer on its own thread: `produce` only
appends to librdkafka's in-memory queue, whose own threads batch, compress and send them. That
queue holds at most `prediction_log_queue` records; past that a record is dropped and counted —
the log never slows or fails a response, whether Kafka is slow or down. (A Python thread of our
own between the two cost the event loop more, in GIL hand-overs, than producing the records:
bench/serving.py, ~1,500 vs ~1,900 req/s saturated.)

The records' format (their fields, JSON encoding and message key) is
featurestore/prediction_records.py's, shared with the drift monitor that reads them.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from featurestore.config import KafkaSettings
from featurestore.prediction_records import LogBatch
from serving.metrics import ServingMetrics

__all__ = ["PredictionLog"]

log = logging.getLogger(__name__)

_FLUSH_S = 10.0  # how long shutdown waits, by default, for Kafka to take what is queued


class PredictionLog:
    """Scored batches to Kafka, never waiting for it. Topic "" disables the log."""

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
        self._producer: Producer | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.topic)

    def start(self) -> None:
        if not self.enabled:
            return
        # The producer connects in the background: Kafka being down at start fails nothing.
        self._producer = Producer(
            self.kafka.client_config(
                **{
                    "linger.ms": 20,
                    "compression.type": "lz4",
                    "queue.buffering.max.messages": self.capacity,
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

    def submit(self, batch: LogBatch) -> None:
        """Hand the batch's records to the producer; a record its full queue refuses, or any
        record before `start` or after `stop`, is dropped and counted. Never blocks."""
        if not self.enabled:
            return
        producer = self._producer
        if producer is None:
            self.metrics.log_dropped.labels("not_running").inc(batch.size)
            return
        handed = 0
        for key, value in batch.records():
            try:
                producer.produce(self.topic, value, key=key)
                handed += 1
            except BufferError:  # `capacity` records wait for Kafka already
                self.metrics.log_dropped.labels("queue_full").inc()
            except KafkaException as exc:
                log.warning("prediction log: record refused: %s", exc)
                self.metrics.log_dropped.labels("kafka_error").inc()
        self.metrics.log_sent.inc(handed)
        producer.poll(0)  # serves delivery reports (failures only) without waiting

    def stop(self) -> None:
        """Flush what is queued (a bounded wait); what Kafka has not taken by then is counted."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        left = producer.flush(self.flush_s)
        if left:
            log.warning("prediction log: %d records not delivered at shutdown", left)
            self.metrics.log_dropped.labels("shutdown").inc(left)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            log.warning("prediction log: record not delivered: %s", err)
            self.metrics.log_dropped.labels("kafka_error").inc()
