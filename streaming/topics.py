"""Create Kafka topics and wait until the broker has them.

Creating its topics is a worker's first call to Kafka, so this is where a broker that refuses us
is told apart from one that is slow: librdkafka reports a failed SASL login or TLS handshake
only to the `error_cb` of a client that polls, and keeps retrying; the wait here polls, and
stops at the first such error with its text (which names the broker, never the password).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException
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
    refusals: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.name() in _REFUSED:
            refusals.append(error)

    admin = AdminClient(kafka.client_config(error_cb=on_error))
    futures = admin.create_topics(
        [
            NewTopic(
                name, num_partitions=partitions, replication_factor=1, config=dict(config or {})
            )
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    future = futures[name]
    deadline = time.monotonic() + timeout
    while not future.done() and not refusals and time.monotonic() < deadline:
        admin.poll(0.1)
    if refusals:
        future.cancel()
        raise StreamingError(
            f"Kafka at {kafka.bootstrap} refused us while creating topic {name!r}: "
            f"{refusals[0].str()} ({_REFUSED[refusals[0].name()]})"
        )
    try:
        future.result(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise StreamingError(
                f"could not create topic {name!r} on {kafka.bootstrap}: {exc.args[0].str()}"
            ) from exc
    except TimeoutError:
        raise StreamingError(
            f"could not create topic {name!r} on {kafka.bootstrap}: no answer within {timeout:g} s"
        ) from None


# Errors that no waiting cures: what we present is refused. What to check, for each.
_REFUSED = {
    "_AUTHENTICATION": "check sasl.mechanism, sasl.username and sasl.password in kafka.properties",
    "_SSL": "check ssl.ca.location (the CA that signed the broker's certificate) and "
    "the broker's host name in kafka.bootstrap",
}
