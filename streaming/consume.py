"""The consumer lifecycle every consumer-group worker here (ingest, monitor) shares.

`ConsumerLoop` owns what is the same for both: the consumer's configuration (group, static
membership, manual commits, lag statistics), seeking each assigned partition to where Redis says
its owner stands, the consume -> process -> commit loop, stopping on SIGTERM/SIGINT, waiting out
a Redis outage, and dead letters to `<topic>.dlq`. The owner brings what is its own: how to
process a batch and where each assigned partition resumes.

Kafka's committed offsets are not the truth: each owner stores its positions in Redis with the
state they describe, and seeks to them on assignment. Offsets are committed only so that the
usual tools show the group's lag.

What a worker sends to Kafka (dead letters, the monitor's drift records and alerts) goes
through `Outbox.send`, which returns only once Kafka has confirmed every message: librdkafka
gives up on a message after `message.timeout.ms` (5 minutes by default) and `flush` then counts
it as done, so a longer outage would drop it silently while the positions moved on.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import FrameType
from typing import TypeVar

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from featurestore.config import KafkaSettings
from featurestore.retry import retry_online
from streaming.errors import DeliveryInterrupted, StreamingError
from streaming.topics import ensure_topic

__all__ = [
    "TRUNCATED_BODY_BYTES",
    "ConsumerLoop",
    "Outbox",
    "Outgoing",
    "Rejected",
    "consumer_lag",
    "dead_letters",
    "messages_by_topic",
    "truncated",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# What a record too large for Kafka keeps of its body (then less, if even that does not fit).
TRUNCATED_BODY_BYTES = 64 * 1024
_SMALLER = (TRUNCATED_BODY_BYTES, 4 * 1024, 0)
_KEY_BYTES = 1024  # a truncated record's key, at most
_DETAIL_CHARS = 1000  # a dead letter's detail header, at most
_LOG_EVERY_S = 30.0  # while a send waits for Kafka
_MAX_BACKOFF_S = 30.0


@dataclass
class Rejected:
    """A message that is not a usable record, and why: what its dead letter says."""

    message: Message
    # malformed_json | missing_field | wrong_type | bad_timestamp | out_of_range | future |
    # oversized | late (docs/semantics.md says what each means)
    reason: str
    detail: str


@dataclass(frozen=True)
class Outgoing:
    """One message for `Outbox.send`."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


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
        self.outbox = Outbox(kafka, lambda: self.stopping, logger)
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
        except DeliveryInterrupted as exc:
            # Stopping in a Kafka outage: nothing moved past what Kafka has not confirmed.
            self._log.warning("%s", exc)
        finally:
            consumer.close()
            self.outbox.close()

    def stop(self) -> None:
        self.stopping = True

    def retry(self, call: Callable[[], _T]) -> _T:
        """`call()`, with a Redis outage waited out until this loop is told to stop."""
        return retry_online(call, lambda: self.stopping, self._log)

    def dead_letter(self, topic: str, rejected: list[Rejected]) -> int:
        """Send `rejected` to `<topic>.dlq` and wait until Kafka has them; returns how many."""
        self.outbox.send(dead_letters(topic, rejected), f"dead letters for {topic}.dlq")
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


class Outbox:
    """A producer whose `send` returns only once Kafka has confirmed every message.

    Each message gets its own delivery report. Whatever failed (expired after
    `message.timeout.ms`, a broker error) is produced again, with backoff capped at 30 s, until
    Kafka has it; meanwhile the log says what waits and since when, and `waiting`/`retried` say
    it to the metrics. Told to stop (`stopping()`), `send` raises `DeliveryInterrupted`: the
    caller moves no position past messages Kafka may not have. A message larger than Kafka
    takes (MSG_SIZE_TOO_LARGE, from the client's `message.max.bytes` or the topic's
    `max.message.bytes`) is sent `truncated`, never refused.
    """

    def __init__(
        self, kafka: KafkaSettings, stopping: Callable[[], bool], logger: logging.Logger = log
    ) -> None:
        self.kafka = kafka
        self.stopping = stopping
        self.retried = 0  # messages produced again after a failed delivery
        self.truncated = 0  # cuts of messages too large for Kafka (`truncated`)
        self.waiting = 0  # messages of the send in progress that Kafka has not confirmed yet
        self.waiting_since: float | None = None  # epoch seconds the send in progress began
        self._log = logger
        self._producer = self._new_producer()

    def waiting_seconds(self) -> float:
        """How long the send in progress has waited (0 when none is)."""
        since = self.waiting_since
        return 0.0 if since is None else max(0.0, time.time() - since)

    def _new_producer(self) -> Producer:
        return Producer(self.kafka.client_config(**{"enable.idempotence": True}))

    def send(self, messages: Sequence[Outgoing], what: str) -> None:
        """Produce `messages` and wait until Kafka has confirmed each one (`what` names them
        in the log: "dead letters for t.dlq")."""
        pending = list(messages)
        if not pending:
            return
        began, delay = time.time(), 0.5
        self.waiting, self.waiting_since = len(pending), began
        try:
            while True:
                errors = self._deliver(pending, what, began)
                failed = [(m, e) for m, e in zip(pending, errors, strict=True) if e is not None]
                self.waiting = len(failed)
                if not failed:
                    return
                if any(e.fatal() for _, e in failed):
                    # The idempotent producer cannot go on: a new one (a new producer id).
                    self._producer = self._new_producer()
                too_large = [e.code() == KafkaError.MSG_SIZE_TOO_LARGE for _, e in failed]
                pending = [
                    truncated(m) if cut else m
                    for (m, _), cut in zip(failed, too_large, strict=True)
                ]
                self.truncated += sum(too_large)
                refused = [e for (_, e), cut in zip(failed, too_large, strict=True) if not cut]
                if refused:
                    self._log.warning(
                        "Kafka did not take %d of %d %s (%s); waiting since %s, producing them "
                        "again in %.1fs",
                        len(refused),
                        len(messages),
                        what,
                        refused[0].str(),
                        _since(began),
                        delay,
                    )
                    self.retried += len(refused)
                    self._sleep(delay, what)
                    delay = min(delay * 2, _MAX_BACKOFF_S)
        finally:
            self.waiting, self.waiting_since = 0, None

    def _deliver(
        self, messages: list[Outgoing], what: str, began: float
    ) -> list[KafkaError | None]:
        """Produce each message once; its delivery error (None: delivered), once all are known."""
        errors: list[KafkaError | None] = [None] * len(messages)
        unknown = 0

        def report(index: int) -> Callable[[KafkaError | None, Message], None]:
            def delivered(error: KafkaError | None, _message: Message) -> None:
                nonlocal unknown
                errors[index] = error
                unknown -= 1

            return delivered

        for i, message in enumerate(messages):
            headers: list[tuple[str, str | bytes | None]] = list(message.headers)
            while True:
                try:
                    self._producer.produce(
                        message.topic,
                        value=message.value,
                        key=message.key,
                        headers=headers,
                        on_delivery=report(i),
                    )
                    unknown += 1
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    self._producer.poll(0.1)
                    self._check_stop(what, began)
                except KafkaException as exc:  # refused before sending (e.g. too large)
                    errors[i] = exc.args[0]
                    break
        last_log = time.monotonic()
        while unknown > 0:
            self._producer.flush(1.0)
            if unknown > 0:
                self._check_stop(what, began)
                if time.monotonic() - last_log >= _LOG_EVERY_S:
                    last_log = time.monotonic()
                    self._log.warning(
                        "%d %s waiting for Kafka since %s", unknown, what, _since(began)
                    )
        return errors

    def _check_stop(self, what: str, began: float) -> None:
        if self.stopping():
            raise DeliveryInterrupted(
                f"stopped while {self.waiting} {what} waited for Kafka (since {_since(began)}); "
                "the batch that made them was not committed and is replayed on restart"
            )

    def _sleep(self, seconds: float, what: str) -> None:
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            self._check_stop(what, self.waiting_since or time.time())
            self._producer.poll(min(left, 0.5))

    def close(self, timeout: float = 5.0) -> None:
        """Give messages still queued (after an interrupted send) a moment to go out."""
        self._producer.flush(timeout)


def truncated(message: Outgoing) -> Outgoing:
    """`message` cut to fit in Kafka, saying so in its headers (`truncated`, the
    `original.size` of the body): the first cut keeps `TRUNCATED_BODY_BYTES` of the body and
    at most 1 KiB of the key, each further one less, down to no body and no key.

    >>> cut = truncated(Outgoing("t.dlq", b"x" * 100_000, b"k", (("reason", b"oversized"),)))
    >>> len(cut.value), cut.key, dict(cut.headers)["original.size"], dict(cut.headers)["truncated"]
    (65536, b'k', b'100000', b'true')
    >>> again = truncated(cut)
    >>> len(again.value), dict(again.headers)["original.size"], dict(again.headers)["reason"]
    (4096, b'100000', b'oversized')
    """
    headers = dict(message.headers)
    value, key = message.value, message.key
    body, name = value or b"", key or b""
    headers.setdefault("original.size", str(len(body)).encode())
    headers["truncated"] = b"true"
    if len(name) > _KEY_BYTES:
        headers.setdefault("original.key.size", str(len(name)).encode())
        key, value = name[:_KEY_BYTES], body[:TRUNCATED_BODY_BYTES]
    elif smaller := [n for n in _SMALLER if n < len(body)]:
        value = body[: smaller[0]]
    elif name:
        headers.setdefault("original.key.size", str(len(name)).encode())
        key = b""
    else:
        raise StreamingError(
            f"a record for {message.topic} does not fit in Kafka even without body and key "
            f"(headers {sorted(headers)}); raise the topic's max.message.bytes"
        )
    return replace(message, value=value, key=key, headers=tuple(headers.items()))


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


def dead_letters(topic: str, rejected: list[Rejected]) -> list[Outgoing]:
    """The records for `<topic>.dlq`: the original key and bytes, the reason and where the
    message was in headers (a body too large for Kafka is truncated when sent: `Outbox`)."""
    out = []
    for item in rejected:
        message = item.message
        headers = (
            ("reason", item.reason.encode()),
            ("detail", item.detail[:_DETAIL_CHARS].encode()),
            ("source.topic", topic.encode()),
            ("source.partition", str(message.partition()).encode()),
            ("source.offset", str(message.offset()).encode()),
        )
        out.append(Outgoing(f"{topic}.dlq", message.value(), message.key(), headers))
    return out


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


def _since(epoch: float) -> str:
    """'16:50:52Z (75s ago)' for log lines."""
    at = datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%SZ")
    return f"{at} ({time.time() - epoch:.0f}s ago)"
