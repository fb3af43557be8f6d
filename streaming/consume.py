"""The consumer lifecycle every consumer-group worker here (ingest, monitor) shares.

`ConsumerLoop` owns what is the same for both: the consumer's configuration (group, static
membership, manual commits, lag statistics), seeking each assigned partition to where Redis says
its owner stands, the consume -> process -> commit loop, stopping on SIGTERM/SIGINT, waiting out
a Redis outage, and dead letters to `<topic>.dlq`. The owner brings what is its own: how to
process a batch and where each assigned partition resumes.

Kafka's committed offsets are not the truth: each owner stores its positions in Redis with the
state they describe, and seeks to them on assignment. Offsets are committed only so that the
usual tools show the group's lag.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TypeVar

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from featurestore.config import KafkaSettings
from featurestore.retry import retry_online
from streaming.topics import ensure_topic

__all__ = [
    "ConsumerLoop",
    "Rejected",
    "consumer_lag",
    "dead_letter",
    "messages_by_topic",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass
class Rejected:
    """A message that is not a usable record, and why: what its dead letter says."""

    message: Message
    reason: str  # malformed_json | missing_field | wrong_type | bad_timestamp | oversized | late
    detail: str


class ConsumerLoop:
    """One consumer in `group` over `topics`, feeding batches to `process`.

    `seek(partitions)` sets each newly assigned partition's offset (from the owner's stored
    positions) before the consumer takes them. `ready(consumer)` runs once the consumer exists,
    before it subscribes; `after_poll(got_messages)` after every poll (e.g. periodic work).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        group: str,
        topics: Sequence[str],
        process: Callable[[list[Message]], None],
        seek: Callable[[list[TopicPartition]], None],
        *,
        batch_size: int = 20_000,
        poll_timeout: float = 0.05,
        instance_id: str | None = None,
        ready: Callable[[Consumer], None] | None = None,
        after_poll: Callable[[bool], None] | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.kafka = kafka
        self.group = group
        self.topics = list(topics)
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        # Static group membership: a restarted worker with the same id takes its old partitions
        # back at once instead of waiting out the session timeout of its dead predecessor.
        self.instance_id = instance_id
        self.lag: dict[tuple[str, int], int] = {}  # from librdkafka statistics
        self.stopping = False
        self.producer = Producer(kafka.client_config(**{"enable.idempotence": True}))
        self._process = process
        self._seek = seek
        self._ready = ready
        self._after_poll = after_poll
        self._log = logger

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Consume until SIGTERM/SIGINT, `stop()`, or `until()` is true; then close cleanly."""
        for topic in self.topics:
            ensure_topic(self.kafka, f"{topic}.dlq")
        self._install_signal_handlers()
        consumer = Consumer(
            self.kafka.client_config(
                **{
                    "group.id": self.group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "range",
                    "statistics.interval.ms": 5000,
                    "stats_cb": self._on_stats,
                    **({"group.instance.id": self.instance_id} if self.instance_id else {}),
                }
            )
        )
        try:
            if self._ready is not None:
                self._ready(consumer)
            consumer.subscribe(self.topics, on_assign=self._on_assign)
            while not self.stopping and not (until and until()):
                messages = consumer.consume(num_messages=self.batch_size, timeout=self.poll_timeout)
                if messages:
                    self._process(messages)
                    consumer.commit(asynchronous=True)
                if self._after_poll is not None:
                    self._after_poll(bool(messages))
        finally:
            consumer.close()
            self.producer.flush(30)

    def stop(self) -> None:
        self.stopping = True

    def retry(self, call: Callable[[], _T]) -> _T:
        """`call()`, with a Redis outage waited out until this loop is told to stop."""
        return retry_online(call, lambda: self.stopping, self._log)

    def dead_letter(self, topic: str, rejected: list[Rejected]) -> int:
        """Send `rejected` to `<topic>.dlq` and wait until Kafka has them; returns how many."""
        dead_letter(self.producer, topic, rejected)
        return len(rejected)

    def _install_signal_handlers(self) -> None:
        def handler(_signum: int, _frame: FrameType | None) -> None:
            self.stop()

        try:
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        except ValueError:
            self._log.debug("not the main thread: stop() is the way out")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._seek(partitions)
        consumer.assign(partitions)
        self._log.info("assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def _on_stats(self, text: str) -> None:
        self.lag.update(consumer_lag(text))


def messages_by_topic(messages: Sequence[Message]) -> dict[str, list[Message]]:
    """The batch's messages per topic, in order; errors other than partition EOF are logged."""
    by_topic: dict[str, list[Message]] = {}
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 - librdkafka's name
                log.warning("consumer error: %s", error)
            continue
        by_topic.setdefault(message.topic() or "", []).append(message)
    return by_topic


def dead_letter(producer: Producer, topic: str, rejected: list[Rejected]) -> None:
    """Send rejected messages to `<topic>.dlq` with the reason in headers; wait until Kafka has
    them, so no position moves past a message before its dead letter is stored (a Kafka outage
    is waited out)."""
    if not rejected:
        return
    for item in rejected:
        message = item.message
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", item.reason.encode()),
            ("detail", item.detail.encode()),
            ("source.topic", topic.encode()),
            ("source.partition", str(message.partition()).encode()),
            ("source.offset", str(message.offset()).encode()),
        ]
        producer.produce(f"{topic}.dlq", value=message.value(), key=message.key(), headers=headers)
    while (waiting := producer.flush(10)) > 0:
        log.warning("Kafka has not taken %d dead letters for %s.dlq yet; waiting", waiting, topic)


def consumer_lag(stats: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> consumer lag, from one librdkafka statistics JSON (`stats_cb`).

    >>> consumer_lag('{"topics": {"t": {"partitions": {"0": {"consumer_lag": 41},'
    ...              ' "-1": {"consumer_lag": 3}, "1": {"consumer_lag": -1}}}}}')
    {('t', 0): 41}
    """
    lag: dict[tuple[str, int], int] = {}
    for topic, info in orjson.loads(stats).get("topics", {}).items():
        for partition, numbers in info.get("partitions", {}).items():
            behind = numbers.get("consumer_lag", -1)
            if int(partition) >= 0 and behind >= 0:
                lag[(topic, int(partition))] = behind
    return lag
