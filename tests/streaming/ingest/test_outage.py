"""Redis or Kafka going away mid-stream: the worker waits, loses nothing, and resumes."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest
import redis as redis_lib

from featurestore.config import (
    KafkaSettings,
    OfflineSettings,
    RedisSettings,
    ServicesSettings,
    Settings,
    load_settings,
)
from featurestore.online import OnlineStore
from featurestore.services import KafkaServer, RedisServer, free_port
from streaming.consume import Outgoing
from streaming.ingest.worker import Worker
from streaming.topics import ensure_topic
from tests.streaming.conftest import (
    US,
    Published,
    as_published,
    assert_matches_reference,
    event_payload,
    make_view,
    publish,
    random_events,
)
from tests.streaming.ingest.test_crash import dead_letters

pytestmark = pytest.mark.integration


def test_worker_survives_a_redis_restart(
    settings: Settings,
    topic: str,
    tmp_path: Path,
    run_worker: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    server = RedisServer(
        ServicesSettings(state_dir=tmp_path / "redis", cache_dir=tmp_path, redis_port=free_port())
    )
    server.start()
    try:
        settings = settings.model_copy(update={"redis": RedisSettings(url=server.url)})
        events = random_events(random.Random(3), 6_000, users=20)
        view = make_view(topic)
        worker = Worker(settings, [(view, 1)], group=f"{topic}.g", batch_size=300)
        run_worker(worker, lambda w: w.counters.consumed >= len(events))

        where = publish(settings.kafka, topic, [event_payload(e) for e in events[:3000]])
        deadline = time.monotonic() + 30
        while worker.counters.consumed < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = worker.counters.consumed
        assert before >= 1000, f"the worker applied only {before} events before the outage"
        # A real outage: the server goes away (saving its data, as a persistent Redis would) ...
        redis_lib.Redis.from_url(server.url).shutdown(save=True)
        where += publish(settings.kafka, topic, [event_payload(e) for e in events[3000:]])
        time.sleep(2)
        during = worker.counters.consumed
        # ... and comes back.
        server.start()
        deadline = time.monotonic() + 60
        while worker.counters.consumed < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)

        assert during < len(events), "the worker should have been held up by the outage"
        # Mid-stream: what was published during the outage waited for Redis to come back ...
        assert during <= 3000, f"{during} events applied with Redis down"
        # ... and the worker met the outage and retried.
        retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
        assert retries, "the worker made no retry during the outage"
        assert all("is unreachable" in m for m in retries), retries
        assert worker.counters.consumed == len(events)
        published = [
            Published(int(datetime.fromisoformat(str(e["ts"])).timestamp() * US), p, o, e)
            for e, (p, o) in zip(events, where, strict=True)
        ]
        newest = max(e.ts for e in published)
        assert assert_matches_reference(settings, view, published, newest) > 100
    finally:
        server.stop()


MESSAGE_TIMEOUT_MS = 2_000


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaServer]:
    """A broker of this test's own (the session's is shared: never stopped)."""
    services = load_settings().services.model_copy(
        update={
            "state_dir": tmp_path / "services",
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
        }
    )
    server = KafkaServer(services)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_dead_letters_wait_out_a_kafka_outage_longer_than_the_message_timeout(
    redis: str,
    key_prefix: str,
    tmp_path: Path,
    own_kafka: KafkaServer,
    run_worker: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker stops just as the worker sends its first dead letters and stays away for
    many times `message.timeout.ms`: librdkafka expires them, the worker produces them again
    until the broker is back, and no position moves meanwhile. Then every bad message is in
    the DLQ and every good event applied once."""
    kafka = KafkaSettings(
        bootstrap=own_kafka.bootstrap,
        properties={"message.timeout.ms": str(MESSAGE_TIMEOUT_MS)},
    )
    settings = Settings(
        kafka=kafka,
        redis=RedisSettings(url=redis, namespace=key_prefix.rstrip(":")),
        offline=OfflineSettings(root=tmp_path / "offline"),
    )
    topic = "txns"
    ensure_topic(kafka, topic, partitions=3)
    events = random_events(random.Random(7), 900, users=15)
    bad = [(b"{not json %d" % i, b"u%d" % (i % 15)) for i in range(30)]
    payloads = [event_payload(e) for e in events] + bad
    random.Random(8).shuffle(payloads)
    where = publish(kafka, topic, payloads)
    position = dict(zip(payloads, where, strict=True))
    view = make_view(topic)
    online = OnlineStore(settings.redis)

    worker = Worker(settings, [(view, 1)], group="g", batch_size=5_000)
    send, restarted, failures = worker.loop.outbox.send, threading.Event(), []
    outage: dict[str, object] = {}

    def restart() -> None:
        try:
            own_kafka.start()
        except BaseException as exc:  # looked at in the test's thread
            failures.append(exc)
        restarted.set()

    def send_in_an_outage(messages: Sequence[Outgoing], what: str) -> None:
        """The fault, injected for real: the first send finds the broker gone."""
        if not outage:
            outage.update(positions=online.positions(view.name, 1), applied=worker.counters.applied)
            own_kafka.stop()
            threading.Timer(4 * MESSAGE_TIMEOUT_MS / 1000, restart).start()
        send(messages, what)

    worker.loop.outbox.send = send_in_an_outage  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, logger="fstore.worker")
    run_worker(worker, lambda w: w.counters.consumed >= len(payloads))
    deadline = time.monotonic() + 60
    while worker.loop.outbox.retried == 0 and time.monotonic() < deadline:
        time.sleep(0.05)

    # Kafka expired the dead letters (at least once) and they wait: nothing moved past them.
    assert worker.loop.outbox.retried > 0, "no dead letter was produced again"
    assert not restarted.is_set(), "the outage ended before the message timeout passed"
    assert worker.loop.outbox.waiting > 0
    assert online.positions(view.name, 1) == outage["positions"]
    assert worker.counters.applied == outage["applied"]

    deadline = time.monotonic() + 120
    while worker.counters.consumed < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not failures, failures
    assert worker.counters.consumed == len(payloads)
    assert worker.loop.outbox.waiting == 0
    assert any("waiting since" in r.message for r in caplog.records), caplog.text

    letters = dead_letters(kafka, topic)
    malformed = {(p, o) for reason, p, o in letters if reason == "malformed_json"}
    assert malformed == {position[b] for b in bad}  # each at least once
    assert {reason for reason, _, _ in letters} == {"malformed_json", "late"}
    assert len(letters) >= worker.counters.dead_lettered
    good = as_published(events, [position[event_payload(e)] for e in events])
    assert assert_matches_reference(settings, view, good, max(e.ts for e in good)) > 50
