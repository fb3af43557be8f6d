"""`Outbox`: what a worker sends to Kafka is confirmed, however long Kafka is away.

librdkafka gives a message up after `message.timeout.ms` and `flush` then reports nothing
left: the old dead-letter loop took that for delivered. Here Kafka is a port where nothing
listens, for longer than the timeout: the send must keep producing the messages again, say so
in the log and its counters, never return, and raise once it is told to stop.
(The same outbox against a broker that comes back: tests/streaming/ingest/test_outage.py.)
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from featurestore.config import KafkaSettings
from featurestore.services import free_port
from streaming.consume import Outbox, Outgoing
from streaming.errors import DeliveryInterrupted


def test_a_send_outlasting_the_message_timeout_retries_until_stopped_and_never_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = KafkaSettings(
        bootstrap=f"127.0.0.1:{free_port()}",  # nothing listens: Kafka is down
        properties={"message.timeout.ms": "1000", "log_level": "0"},
    )
    stop = threading.Event()
    outbox = Outbox(kafka, stop.is_set)
    outcome: list[BaseException | None] = []

    def send() -> None:
        try:
            outbox.send([Outgoing("t.dlq", b"body %d" % i, b"k") for i in range(5)], "letters")
            outcome.append(None)
        except BaseException as exc:  # looked at in the test's thread
            outcome.append(exc)

    caplog.set_level(logging.WARNING, logger="streaming.consume")
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while outbox.retried < 10 and time.monotonic() < deadline:  # two rounds of 5 expired
        time.sleep(0.1)

    assert outbox.retried >= 10, "the expired messages were not produced again"
    assert thread.is_alive() and not outcome, "the send returned although nothing was delivered"
    assert outbox.waiting == 5 and outbox.waiting_seconds() > 2
    assert any(
        "Kafka did not take 5 of 5 letters" in r.message and "waiting since" in r.message
        for r in caplog.records
    ), caplog.text

    stop.set()
    thread.join(15)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], DeliveryInterrupted), outcome
    assert "5 letters waited for Kafka" in str(outcome[0])
    assert outbox.waiting == 0 and outbox.waiting_seconds() == 0
