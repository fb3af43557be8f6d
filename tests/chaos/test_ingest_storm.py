"""`fstore ingest` over a stream with poison mixed in, while its Redis is restarted without its
data and with its append-only file, its Kafka broker is restarted, and the worker is SIGKILLed
and started again: all on real servers of the test's own, each fault landing mid-stream.

Afterwards every online value equals the brute-force reference (tests/reference.py) over the
accepted events (the good ones minus the late ones), at three read times; the offline log holds
exactly the accepted events, each once; every poison message and every late event is on the
dead-letter topic with its reason, and no accepted event is; the worker never exited by itself,
and it said it rebuilt the state Redis lost.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from featurestore.config import (
    KafkaSettings,
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    Settings,
)
from featurestore.online import OnlineStore
from streaming.topics import ensure_topic
from tests.chaos.conftest import Broker, PersistentRedis
from tests.reference import apply_lateness
from tests.streaming.conftest import (
    US,
    Published,
    as_published,
    assert_matches_reference,
    event_payload,
    random_events,
)
from tests.streaming.ingest.test_crash import (
    Cli,
    applied_through,
    assert_offline_log_holds,
    assert_running,
    caught_up,
    dead_letters,
    last_offsets,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

GOOD = {"user_id": "u1", "amount": 1.0, "merchant": "m1", "ts": "2026-03-01T12:00:00+00:00"}


def _with(**raw: bytes) -> bytes:
    """The good event with fields replaced by raw JSON text (numbers no encoder writes)."""
    text = orjson.dumps({k: v for k, v in GOOD.items() if k not in raw})[:-1]
    return text + b"".join(b"," + orjson.dumps(k) + b":" + v for k, v in raw.items()) + b"}"


FUTURE = (datetime.now(UTC) + timedelta(days=365)).isoformat().encode()
# Every kind of poison the source's schema admits: (bytes, the reason the DLQ must give).
POISON: list[tuple[bytes, str]] = [
    (orjson.dumps(GOOD)[:-9], "malformed_json"),
    (_with(amount=b"NaN"), "malformed_json"),
    (b"[1, 2]", "malformed_json"),
    (orjson.dumps({k: v for k, v in GOOD.items() if k != "merchant"}), "missing_field"),
    (_with(user_id=b"7"), "wrong_type"),
    (_with(amount=b'"1.0"'), "wrong_type"),
    (_with(amount=b"9007199254740993"), "out_of_range"),  # 2^53 + 1 in a float64 column
    (_with(amount=b"18446744073709551615"), "out_of_range"),  # 2^64 - 1
    (_with(ts=b'"9999-12-31T23:59:59Z"'), "out_of_range"),
    (_with(ts=b"9300000000000000"), "out_of_range"),  # epoch ms past year 294,000
    (_with(ts=b'"2026-03-01T12:00:00"'), "bad_timestamp"),  # no UTC offset
    (_with(ts=b'"' + FUTURE + b'"'), "future"),  # a year ahead: must not move the watermark
    (_with(pad=b'"' + b"x" * 1_000_001 + b'"'), "oversized"),
]


def publish(
    kafka: KafkaSettings, topic: str, payloads: list[tuple[bytes, bytes | None]]
) -> list[tuple[int, int]]:
    """Send (value, key) pairs, waiting out a broker restart; each one's (partition, offset).
    The client takes messages up to 2 MB, as the topic does: the oversized one goes out."""
    config = {"enable.idempotence": True, "linger.ms": 5, "message.max.bytes": 2_100_000}
    producer = Producer(kafka.client_config(**config))
    where: list[tuple[int, int]] = [(-1, -1)] * len(payloads)
    errors: list[str] = []

    def delivered(index: int) -> Callable[[Any, Any], None]:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                where[index] = (msg.partition(), msg.offset())

        return callback

    for i, (value, key) in enumerate(payloads):
        producer.produce(topic, value, key=key, on_delivery=delivered(i))
        producer.poll(0)
    assert producer.flush(120) == 0 and not errors, errors[:3]
    return where


class StreamPublisher(threading.Thread):
    """Publishes chunks of good events with one poison message after every 100 of them,
    pausing between chunks; where each landed, from the delivery reports."""

    def __init__(self, settings: Settings, topic: str, events: list[dict[str, object]]) -> None:
        super().__init__(name="publisher", daemon=True)
        self.settings, self.topic, self.events = settings, topic, events
        self.good: list[tuple[int, int]] = []
        self.poison: list[tuple[str, int, int]] = []  # (reason, partition, offset)
        self.error: BaseException | None = None
        self.faults_done = threading.Event()

    def run(self) -> None:
        try:
            every, start = 100, 0
            while start < len(self.events):
                # The last fifth trickles until the faults are done: the stream outlasts them
                # however slowly they come, so each lands mid-stream.
                slow = not self.faults_done.is_set() and start >= len(self.events) * 4 // 5
                chunk = 25 if slow else 500
                payloads: list[tuple[bytes, bytes | None]] = []
                reasons: list[str | None] = []
                for i, event in enumerate(self.events[start : start + chunk], start):
                    payloads.append(event_payload(event))
                    reasons.append(None)
                    if i % every == every - 1:
                        value, reason = POISON[(i // every) % len(POISON)]
                        payloads.append((value, str(event["user_id"]).encode()))
                        reasons.append(reason)
                where = publish(self.settings.kafka, self.topic, payloads)
                for reason, (p, o) in zip(reasons, where, strict=True):
                    if reason is None:
                        self.good.append((p, o))
                    else:
                        self.poison.append((reason, p, o))
                start += chunk
                time.sleep(0.5)
        except BaseException as exc:  # re-raised in the test's thread by `published`
            self.error = exc

    @property
    def delivered(self) -> int:
        return len(self.good) + len(self.poison)

    def published(self) -> list[Published]:
        self.join(300)
        assert not self.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error
        return as_published(self.events, self.good)


@pytest.fixture
def cli(own_kafka: Broker, persistent_redis: PersistentRedis, tmp_path: Path) -> Iterator[Cli]:
    settings = Settings(
        kafka=own_kafka.settings,
        redis=RedisSettings(url=persistent_redis.url, namespace="chaos"),
        offline=OfflineSettings(root=tmp_path / "offline"),
        registry=RegistrySettings(path=tmp_path / "registry"),
    )
    runner = Cli(settings, tmp_path)
    try:
        yield runner
    finally:
        for process in runner.processes:
            if process.poll() is None:
                process.kill()
                process.wait(30)


def test_the_worker_loses_and_doubles_nothing_through_poison_redis_kafka_and_kill_faults(
    cli: Cli,
    own_kafka: Broker,
    persistent_redis: PersistentRedis,
    topic_name: Callable[[str], str],
) -> None:
    settings = cli.settings
    topic = topic_name("txns")
    ensure_topic(settings.kafka, topic, partitions=3, config={"max.message.bytes": "2000000"})
    view = cli.apply_repo(topic)
    store = OnlineStore(settings.redis)
    events = random_events(random.Random(18), 25_000, users=300, spacing_s=0.5)
    publisher = StreamPublisher(settings, topic, events)
    args = ("ingest", "--group", f"{topic}.ingest", "--batch-size", "1000")
    args += ("--instance-id", f"{topic}.worker")
    lives = [cli.start("ingest-0", *args)]

    def progress_then(fault: Callable[[], None]) -> None:
        """Once the worker has applied a batch since the last fault, with more to go."""
        assert publisher.is_alive(), "the stream ended before the faults: publish more slowly"
        since = applied_through(store, view)
        wait_until(
            lambda: since < applied_through(store, view) < publisher.delivered,
            60,
            "the worker to apply more of the stream",
        )
        assert_running(cli, lives[-1], f"ingest-{len(lives) - 1}")
        fault()

    def kill() -> None:
        lives[-1].send_signal(signal.SIGKILL)
        lives[-1].wait(30)
        lives.append(cli.start(f"ingest-{len(lives)}", *args))

    publisher.start()
    progress_then(lambda: persistent_redis.restart(wipe=True))
    progress_then(kill)
    progress_then(lambda: persistent_redis.restart(wipe=False))
    progress_then(own_kafka.restart)
    progress_then(lambda: persistent_redis.restart(wipe=True))
    progress_then(kill)
    publisher.faults_done.set()

    published = publisher.published()
    ends = last_offsets(published)
    for _reason, p, o in publisher.poison:
        ends[p] = max(ends[p], o)
    wait_until(caught_up(store, view, ends), 180, "the worker to consume the whole stream")
    name = f"ingest-{len(lives) - 1}"
    wait_until(lambda: "assigned" in cli.log(name), 60, "the last worker to join its group")
    assert_running(cli, lives[-1], name)
    lives[-1].send_signal(signal.SIGTERM)
    assert lives[-1].wait(30) == 0, cli.log(name)[-4000:]

    applied, late = apply_lateness(published, view.view.lateness_us)
    assert late, "the stream should hold late events"
    newest = max(e.ts for e in published)
    for later_s in (0, 30 * 60, 100 * 60):
        assert_matches_reference(
            settings, view.view, published, newest + later_s * US, version=view.version
        )
    assert_offline_log_holds(settings, view, applied)

    dead: dict[tuple[int, int], set[str]] = {}
    for reason, p, o in dead_letters(settings.kafka, topic):
        dead.setdefault((p, o), set()).add(reason)
    want = {(p, o): reason for reason, p, o in publisher.poison}
    want.update({(e.partition, e.offset): "late" for e in late})
    assert {where: {reason} for where, reason in want.items()} == dead
    assert {reason for reason, _p, _o in publisher.poison} == {r for _v, r in POISON}

    logs = "".join(cli.log(f"ingest-{i}") for i in range(len(lives)))
    assert logs.count("online state rebuilt from the offline log") >= 2, logs[-4000:]
    assert (persistent_redis.wipes, persistent_redis.restarts, own_kafka.restarts) == (2, 3, 1)
