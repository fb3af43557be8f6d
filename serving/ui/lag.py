"""How far the ingest workers are behind Kafka: end offsets of the source topics, cached.

A view's stored position on a partition is the last offset it applied, so its lag there is
`high watermark - (offset + 1)`; a partition it has not read yet is behind by everything the
topic keeps (`high - low`: workers start from the earliest offset). Asking Kafka costs a
metadata round trip and one per partition, so answers (and failures) are kept a few seconds:
a page polling every two seconds asks Kafka at most once per `ttl_s`. When Kafka does not
answer the lag is unknown, with the reason, and the page shows that instead of failing.

>>> lag({0: (0, 10), 1: (5, 8)}, {0: 4})
8
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from featurestore.config import KafkaSettings

__all__ = ["LagProbe", "TopicEnds", "lag"]

# (low, high) watermark offsets by partition.
Ends = dict[int, tuple[int, int]]


@dataclass(frozen=True)
class TopicEnds:
    ends: Ends | None  # None: unknown
    error: str | None  # why it is unknown


def lag(ends: Mapping[int, tuple[int, int]], offsets: Mapping[int, int]) -> int:
    """Messages on the topic that the stored positions (partition -> last applied offset) have
    not applied yet. Pseudo-partitions of imports and backfills (< 0) are not Kafka's."""
    behind = 0
    for partition, (low, high) in ends.items():
        applied = offsets.get(partition)
        next_offset = low if applied is None or applied < 0 else max(applied + 1, low)
        behind += max(high - next_offset, 0)
    return behind


class LagProbe:
    def __init__(self, config: KafkaSettings, ttl_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self.config = config
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[float, TopicEnds]] = {}
        self._lock = threading.Lock()  # one probe at a time; the others wait for its answer

    def ends(self, topics: list[str]) -> dict[str, TopicEnds]:
        with self._lock:
            now = time.monotonic()
            stale = [
                t for t in topics if t not in self._cache or now - self._cache[t][0] > self.ttl_s
            ]
            if stale:
                for topic, answer in self._probe(stale).items():
                    self._cache[topic] = (now, answer)
            return {topic: self._cache[topic][1] for topic in topics}

    def _probe(self, topics: list[str]) -> dict[str, TopicEnds]:
        # A consumer that never subscribes nor commits: its group id is only required by the
        # client. A new one per probe, so an unreachable broker leaves no client retrying.
        consumer = Consumer(
            self.config.client_config(
                **{"group.id": f"fstore-ui-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
            )
        )
        try:
            try:
                metadata = consumer.list_topics(timeout=self.timeout_s)
            except KafkaException as exc:
                reason = f"Kafka at {self.config.bootstrap} did not answer: {exc.args[0]}"
                return {topic: TopicEnds(None, reason) for topic in topics}
            out: dict[str, TopicEnds] = {}
            for topic in topics:
                found = metadata.topics.get(topic)
                if found is None or found.error is not None or not found.partitions:
                    out[topic] = TopicEnds(None, f"topic {topic!r} does not exist on Kafka yet")
                    continue
                try:
                    out[topic] = self._topic_ends(consumer, topic, sorted(found.partitions))
                except KafkaException as exc:
                    out[topic] = TopicEnds(None, f"end offsets of {topic!r}: {exc.args[0]}")
            return out
        finally:
            consumer.close()

    def _topic_ends(self, consumer: Consumer, topic: str, partitions: list[int]) -> TopicEnds:
        ends: Ends = {}
        for partition in partitions:
            answer = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout_s
            )
            if answer is None:  # the client's way of saying it timed out
                return TopicEnds(None, f"Kafka did not give the end offsets of {topic!r} in time")
            ends[partition] = (int(answer[0]), int(answer[1]))
        return TopicEnds(ends, None)
