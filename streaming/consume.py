"""What every consumer-group worker here (ingest, monitor) does around a batch of messages.

Group the batch by topic, leaving out partition-EOF markers; send rejected messages to
`<topic>.dlq` and wait until Kafka holds them; read each partition's lag from librdkafka's
statistics callback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from confluent_kafka import KafkaError, Message, Producer

from streaming.ingest.decode import Rejected

__all__ = ["consumer_lag", "dead_letter", "messages_by_topic"]

log = logging.getLogger(__name__)


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
    """(topic, partition) -> consumer lag, from one librdkafka statistics JSON (`stats_cb`)."""
    lag: dict[tuple[str, int], int] = {}
    for topic, info in orjson.loads(stats).get("topics", {}).items():
        for partition, numbers in info.get("partitions", {}).items():
            behind = numbers.get("consumer_lag", -1)
            if int(partition) >= 0 and behind >= 0:
                lag[(topic, int(partition))] = behind
    return lag
