"""The wiring works end to end on real servers: Kafka topic -> consumer group -> Redis."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import redis as redis_lib

from featurestore.config import KafkaSettings
from streaming.smoke import consume_into_redis, make_events, produce, read_back
from streaming.topics import ensure_topic

pytestmark = pytest.mark.integration


def test_ten_thousand_events_reach_redis_exactly(
    kafka: KafkaSettings,
    redis_client: redis_lib.Redis,
    topic_name: Callable[[str], str],
    key_prefix: str,
) -> None:
    topic = topic_name("events")
    events = make_events(10_000, seed=7)
    ensure_topic(kafka, topic, partitions=3)

    produce(kafka, topic, events)
    consumed = consume_into_redis(
        kafka, redis_client, topic, group=f"{topic}.group", key_prefix=key_prefix, expected=10_000
    )

    assert consumed == 10_000
    assert read_back(redis_client, key_prefix, 10_000) == events
    # Nothing beyond the 10,000 events was written, and all three partitions carried some.
    assert len(list(redis_client.scan_iter(match=f"{key_prefix}*", count=5000))) == 10_000
    partitions = Counter(
        int(redis_client.hget(f"{key_prefix}event:{i}", "partition") or -1) for i in range(10_000)
    )
    assert set(partitions) == {0, 1, 2}


def test_consumer_group_resumes_from_committed_offsets(
    kafka: KafkaSettings,
    redis_client: redis_lib.Redis,
    topic_name: Callable[[str], str],
    key_prefix: str,
) -> None:
    """A second run of the same group sees only what was published after the first one."""
    topic, group = topic_name("events"), topic_name("group")
    ensure_topic(kafka, topic, partitions=3)
    events = make_events(600, seed=1)

    produce(kafka, topic, events[:400])
    assert consume_into_redis(kafka, redis_client, topic, group, key_prefix, expected=400) == 400
    produce(kafka, topic, events[400:])
    assert consume_into_redis(kafka, redis_client, topic, group, key_prefix, expected=200) == 200

    offsets = [int(redis_client.hget(f"{key_prefix}event:{i}", "offset") or -1) for i in range(600)]
    assert min(offsets) >= 0
    assert read_back(redis_client, key_prefix, 600) == events
