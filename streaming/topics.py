"""Create Kafka topics and wait until the broker has them."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from featurestore.config import KafkaSettings
from streaming.errors import StreamingError

__all__ = ["ensure_topic"]


def ensure_topic(
    kafka: KafkaSettings,
    name: str,
    partitions: int = 1,
    timeout: float = 30.0,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create `name` with `partitions` partitions and topic `config` (e.g.
    `{"max.message.bytes": "2000000"}`); an existing topic is left as it is."""
    admin = AdminClient(kafka.client_config())
    futures = admin.create_topics(
        [
            NewTopic(
                name, num_partitions=partitions, replication_factor=1, config=dict(config or {})
            )
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    try:
        futures[name].result(timeout=timeout)
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise StreamingError(
                f"could not create topic {name!r} on {kafka.bootstrap}: {exc.args[0].str()}"
            ) from exc
