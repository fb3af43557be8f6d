"""`fstore ingest` killed again and again, two workers sharing partitions, a backfill racing one.

The worker claims an exactly-once effect (featurestore/writer.py): Redis, not Kafka, records where a
view stands, and one atomic Lua call checks the positions a batch started from, merges its tiles
and moves the positions. So a crash anywhere replays at most the batch in flight and applies it
once, and a batch that another consumer has applied meanwhile changes nothing. Here the real
command line runs as subprocesses on real Kafka and Redis - killed at random moments, handing its
partitions over in a rebalance, racing a backfill - and afterwards every online value must equal
the brute-force reference (tests/reference.py), the offline log must hold each applied event once,
and the dead-letter topic every late event (at least once, as docs/semantics.md says).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from featurestore.config import KafkaSettings, RegistrySettings, Settings
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore
from featurestore.positions import NO_POSITION
from featurestore.registry import RegisteredView, Registry
from streaming.topics import ensure_topic
from tests.reference import apply_lateness
from tests.streaming.conftest import (
    US,
    Published,
    as_published,
    assert_matches_reference,
    event_payload,
    publish,
    random_events,
)

pytestmark = pytest.mark.integration

FSTORE = Path(sys.executable).with_name("fstore")
MIN_KILLS = 10
MIN_MID_BATCH = 3  # kills shown to have landed between a batch's first effect and its merge
MAX_KILLS = 100  # enough for the above many times over; a bound, so a test that fails says so

# The view of `make_view` in conftest.py (plus a variance), as a user writes it in a feature repo.
FEATURE_REPO = """\
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(
    name="txns",
    topic={topic!r},
    timestamp_field="ts",
    schema={{"user_id": "string", "amount": "float64", "merchant": "string"}},
)
user_txn = FeatureView(
    name="user_txn",
    entities=[user],
    source=txns,
    tile="1m",
    allowed_lateness="5m",
    ttl="1h",
    aggregations=[
        Aggregation(function="count", windows=["10m", "1h"]),
        Aggregation(column="amount", function="sum", windows=["10m", "1h", "2h"]),
        Aggregation(column="amount", function="mean", windows=["1h"]),
        Aggregation(column="amount", function="min", windows=["2h"]),
        Aggregation(column="amount", function="max", windows=["10m", "2h"]),
        Aggregation(column="amount", function="variance", windows=["10m"]),
        Aggregation(column="amount", function="stddev", windows=["1h"]),
        Aggregation(column="amount", function="last", windows=["2h"]),
    ],
)
"""


@dataclass
class Cli:
    """Runs `fstore` with this test's settings, in its own folder; the fixture reaps processes."""

    settings: Settings
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, kafka_properties: dict[str, str] | None = None) -> dict[str, str]:
        # Only our FSTORE_* variables: none of the caller's may point the workers elsewhere.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
        env.update(
            FSTORE_KAFKA_BOOTSTRAP=self.settings.kafka.bootstrap,
            FSTORE_REDIS_URL=self.settings.redis.url,
            FSTORE_REDIS_NAMESPACE=self.settings.redis.namespace,
            FSTORE_REDIS_CLUSTER=str(self.settings.redis.cluster).lower(),
            FSTORE_OFFLINE_ROOT=str(self.settings.offline.root),
            FSTORE_REGISTRY_PATH=str(self.settings.registry.path),
        )
        if kafka_properties:
            env["FSTORE_KAFKA_PROPERTIES"] = json.dumps(kafka_properties)
        return env

    def apply_repo(self, topic: str) -> RegisteredView:
        repo = self.folder / "features.py"
        repo.write_text(FEATURE_REPO.format(topic=topic))
        done = subprocess.run(
            [str(FSTORE), "apply", str(repo)],
            env=self.env(),
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return Registry(self.settings.registry).get_view("user_txn")

    def start(
        self, name: str, *args: str, kafka_properties: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `fstore <args>`; its output goes to `<name>.log` in the test's folder."""
        with (self.folder / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(FSTORE), *args],
                env=self.env(kafka_properties),
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Iterator[Cli]:
    registry = RegistrySettings(path=tmp_path / "registry")
    runner = Cli(settings.model_copy(update={"registry": registry}), tmp_path)
    try:
        yield runner
    finally:
        for process in runner.processes:
            if process.poll() is None:
                process.kill()
                process.wait(30)


class Publisher(threading.Thread):
    """Publishes events in chunks from a background thread, pausing between chunks."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        events: list[dict[str, object]],
        chunk: int,
        pause_s: float,
    ) -> None:
        super().__init__(name=f"publish {topic}", daemon=True)
        self.kafka, self.topic, self.events = kafka, topic, events
        self.chunk, self.pause_s = chunk, pause_s
        self.where: list[tuple[int, int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self.events), self.chunk):
                payloads = [event_payload(e) for e in self.events[start : start + self.chunk]]
                self.where += publish(self.kafka, self.topic, payloads)
                time.sleep(self.pause_s)
        except BaseException as exc:  # re-raised in the test's thread by `published`
            self.error = exc

    @property
    def delivered(self) -> int:
        return len(self.where)

    def published(self) -> list[Published]:
        self.join(120)
        assert not self.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error
        return as_published(self.events, self.where)


def applied_through(store: OnlineStore, view: RegisteredView) -> int:
    """How many offsets the view's stored positions cover, over all partitions."""
    return sum(p.offset + 1 for p in store.positions(view.name, view.version).values())


def last_offsets(published: list[Published]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for event in published:
        ends[event.partition] = max(ends.get(event.partition, -1), event.offset)
    return ends


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    assert wait_for(condition, timeout_s), f"waited {timeout_s}s for {what}"


def applying(
    store: OnlineStore, view: RegisteredView, since: int, publisher: Publisher
) -> Callable[[], bool]:
    """Whether the worker has applied batches since `since` and has events to go."""
    return lambda: since < applied_through(store, view) < publisher.delivered


def caught_up(store: OnlineStore, view: RegisteredView, ends: dict[int, int]) -> Callable[[], bool]:
    def check() -> bool:
        positions = store.positions(view.name, view.version)
        return all(positions.get(p, NO_POSITION).offset >= end for p, end in ends.items())

    return check


def assert_running(cli: Cli, process: subprocess.Popen[bytes], name: str) -> None:
    assert process.poll() is None, (
        f"{name} exited by itself ({process.returncode}):\n" + cli.log(name)[-4000:]
    )


def assert_offline_log_holds(
    settings: Settings, view: RegisteredView, applied: list[Published]
) -> int:
    """The offline log holds exactly the applied events, each once; returns its rows on disk."""
    offline = OfflineStore(settings.offline)
    log = offline.read_events(view.name, view.version)
    stamps = log["event_timestamp"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    got = sorted(
        zip(
            log["_partition"].to_pylist(),
            log["_offset"].to_pylist(),
            stamps.to_pylist(),
            log["user_id"].to_pylist(),
            log["amount"].to_pylist(),
            strict=True,
        )
    )
    want = sorted(
        (e.partition, e.offset, e.ts, e.values["user_id"], e.values["amount"]) for e in applied
    )
    assert got == want
    files = offline.view_dir(view.name, view.version).glob("*/*.parquet")
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def dead_letters(kafka: KafkaSettings, topic: str) -> list[tuple[str, int, int]]:
    """(reason, source partition, source offset) of every message on `<topic>.dlq`."""
    dlq = f"{topic}.dlq"
    consumer = Consumer(
        kafka.client_config(**{"group.id": f"{dlq}.check", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(dlq, timeout=10).topics[dlq].partitions
        expected = 0
        assignment = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(dlq, partition), timeout=10)
            expected += high - low
            assignment.append(TopicPartition(dlq, partition, low))
        consumer.assign(assignment)
        found: list[tuple[str, int, int]] = []
        deadline = time.monotonic() + 60
        while len(found) < expected and time.monotonic() < deadline:
            for message in consumer.consume(5000, timeout=0.5):
                assert message.error() is None, message.error()
                headers = {k: (v or b"").decode() for k, v in message.headers() or []}
                found.append(
                    (
                        headers["reason"],
                        int(headers["source.partition"]),
                        int(headers["source.offset"]),
                    )
                )
        assert len(found) == expected
        return found
    finally:
        consumer.close()


class DeadLetterWatch:
    """Follows `<topic>.dlq` while workers run and die: the source (partition, offset) of each
    dead letter, and how many the topic holds.

    A worker dead-letters a batch's late events and waits until Kafka has them before it writes
    the batch's log and merges it (moving the positions). So once a worker is dead, a dead letter
    beyond the stored position of its partition marks a kill that landed mid-batch: after the
    batch's first effect, before its merge. Every batch of these streams holds late events.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.dlq = f"{topic}.dlq"
        ensure_topic(kafka, self.dlq)  # one partition, as the worker makes it
        self.partition = TopicPartition(self.dlq, 0)
        self.consumer = Consumer(
            kafka.client_config(**{"group.id": f"{self.dlq}.watch", "enable.auto.commit": False})
        )
        self.consumer.assign([TopicPartition(self.dlq, 0, OFFSET_BEGINNING)])
        self.next_offset = 0

    def stored(self) -> int:
        """The topic's high watermark, asked of the broker (about a millisecond)."""
        return int(self.consumer.get_watermark_offsets(self.partition, 10, cached=False)[1])

    def grown(self) -> Callable[[], bool]:
        """Whether a dead letter has been stored since this call."""
        before = self.stored()
        return lambda: self.stored() > before

    def read_new(self) -> list[tuple[int, int]]:
        """The source (partition, offset) of every dead letter stored since the last call."""
        end, found = self.stored(), []
        deadline = time.monotonic() + 30
        while self.next_offset < end:
            assert time.monotonic() < deadline, f"could not read {self.dlq} up to {end}"
            for message in self.consumer.consume(1000, timeout=0.5):
                assert message.error() is None, message.error()
                headers = {k: (v or b"").decode() for k, v in message.headers() or []}
                found.append((int(headers["source.partition"]), int(headers["source.offset"])))
                self.next_offset = (message.offset() or 0) + 1
        return found

    def close(self) -> None:
        self.consumer.close()


def group_assignment(kafka: KafkaSettings, group: str) -> dict[str, set[int]]:
    """The partitions each member of a consumer group holds, by client id, as the broker says."""
    admin = AdminClient(kafka.client_config())
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    try:
        members = future.result().members
    except KafkaException:
        return {}  # no such group yet
    return {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in members}


# ~60 s; up to MAX_KILLS lives of a few seconds each before it gives up and says why.
@pytest.mark.timeout(600)
def test_ingest_killed_at_random_moments_applies_every_event_exactly_once(
    cli: Cli, topic_name: Callable[[str], str]
) -> None:
    """SIGKILL at random moments, mostly amid batches; then the values of 2,000 users are exact.

    This holds the merge to its atomicity: tiles merged without their positions moved would be
    merged again after the restart. At least `MIN_MID_BATCH` kills are shown (by the dead-letter
    topic, see `DeadLetterWatch`) to have landed inside a batch, after its dead letters were
    stored and before its merge: the replay the exactly-once claim is about did happen.
    """
    began = time.monotonic()
    settings = cli.settings
    topic = topic_name("txns")
    ensure_topic(settings.kafka, topic, partitions=3)
    view = cli.apply_repo(topic)
    store = OnlineStore(settings.redis)
    rng = random.Random(20261123)
    # ~5.5 hours of event time: 2,000 users with a few events in every 10 minutes.
    events = random_events(rng, 200_000, users=2_000, spacing_s=0.1)
    publisher = Publisher(settings.kafka, topic, events, chunk=5_000, pause_s=0.2)
    watch = DeadLetterWatch(settings.kafka, topic)

    # A restarted worker takes its dead predecessor's place in the group at once (static
    # membership) rather than waiting out the session timeout of a member that never left.
    args = (
        "ingest",
        "--group",
        f"{topic}.ingest",
        "--batch-size",
        "2000",
        "--instance-id",
        f"{topic}.worker",
    )
    publisher.start()
    name = "ingest-0"
    worker = cli.start(name, *args)
    kills = kills_while_applying = kills_mid_batch = 0
    while (
        publisher.is_alive()
        or kills < MIN_KILLS
        or (
            (kills_while_applying < MIN_KILLS or kills_mid_batch < MIN_MID_BATCH)
            and applied_through(store, view) < publisher.delivered
            and kills < MAX_KILLS
        )
    ):
        busy = applying(store, view, applied_through(store, view), publisher)
        time.sleep(rng.uniform(0.2, 1.5))
        # Most kills should land amid the worker's batches, at a random point of one: wait a
        # little for this life to have applied some and to have more to go, then kill. Some are
        # aimed inside a batch: right after its dead letters are stored, before its merge. The
        # rest land wherever the sleep ended: in start-up, joining the group, waiting for events.
        aim = rng.random()
        if aim < 0.3:
            wait_for(watch.grown(), 3, poll_s=0.001)
        elif aim < 0.8:
            wait_for(busy, 3)
            time.sleep(rng.uniform(0, 0.15))
        kills_while_applying += busy()
        assert_running(cli, worker, name)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        kills += 1
        # Did this life die mid-batch? Its dead letters beyond the positions say so.
        positions = store.positions(view.name, view.version)
        kills_mid_batch += any(
            offset > positions.get(partition, NO_POSITION).offset
            for partition, offset in watch.read_new()
        )
        name = f"ingest-{kills}"
        worker = cli.start(name, *args)
    watch.close()
    assert kills_mid_batch >= MIN_MID_BATCH, (
        f"only {kills_mid_batch} of {kills} kills landed mid-batch: the test proved too little"
    )

    published = publisher.published()
    ends = last_offsets(published)
    wait_until(caught_up(store, view, ends), 120, "the last worker to catch up")
    # SIGTERM is the clean stop once the worker runs; before that it would just kill the process.
    wait_until(lambda: "assigned" in cli.log(name), 60, "the last worker to join its group")
    assert_running(cli, worker, name)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, cli.log(name)[-4000:]
    ingested = time.monotonic()

    applied, late = apply_lateness(published, view.view.lateness_us)
    assert late, "the stream should hold late events"
    newest = max(e.ts for e in published)
    compared = 0
    # At the newest event, then after the 10-minute windows have emptied and the others slid.
    for later_s in (0, 30 * 60, 100 * 60):
        compared += assert_matches_reference(
            settings, view.view, published, newest + later_s * US, version=view.version
        )
    on_disk = assert_offline_log_holds(settings, view, applied)
    dead = dead_letters(settings.kafka, topic)
    assert {reason for reason, _, _ in dead} == {"late"}
    assert {(p, o) for _, p, o in dead} == {(e.partition, e.offset) for e in late}
    print(
        f"\n{kills} kills ({kills_while_applying} while applying, {kills_mid_batch} mid-batch), "
        f"{len(published):,} events "
        f"({len(late):,} late) ingested in {ingested - began:.0f}s; {compared:,} values equal "
        f"the reference; offline files hold {on_disk:,} rows for {len(applied):,} events; "
        f"{len(dead):,} dead letters for {len(late):,} late events; "
        f"{time.monotonic() - began:.0f}s in all"
    )


def test_two_workers_share_the_partitions_and_one_takes_over_from_the_other(
    cli: Cli, topic_name: Callable[[str], str]
) -> None:
    """Two workers of one group split six partitions; one stops mid-stream, the other goes on."""
    settings = cli.settings
    topic = topic_name("txns")
    ensure_topic(settings.kafka, topic, partitions=6)
    view = cli.apply_repo(topic)
    store = OnlineStore(settings.redis)
    group = f"{topic}.ingest"
    args = ("ingest", "--group", group, "--batch-size", "500")
    # Their client ids tell the two apart in the broker's description of the group.
    workers = {
        name: cli.start(name, *args, kafka_properties={"client.id": name})
        for name in ("first", "second")
    }
    wait_until(
        lambda: sorted(map(len, group_assignment(settings.kafka, group).values())) == [3, 3],
        60,
        "each worker to hold three of the six partitions",
    )
    held = group_assignment(settings.kafka, group)
    assert held["first"] | held["second"] == set(range(6))

    events = random_events(random.Random(7), 30_000, users=300, spacing_s=0.5)
    publisher = Publisher(settings.kafka, topic, events, chunk=3_000, pause_s=0.3)
    publisher.start()

    def both_applied() -> bool:
        positions = store.positions(view.name, view.version)
        moved = {p for p, position in positions.items() if position.offset >= 0}
        return bool(moved & held["first"]) and bool(moved & held["second"])

    wait_until(both_applied, 60, "both workers to apply events")
    workers["second"].send_signal(signal.SIGTERM)  # a clean stop, as when scaling down
    assert workers["second"].wait(30) == 0, cli.log("second")[-4000:]
    left_behind = store.positions(view.name, view.version)
    wait_until(
        lambda: group_assignment(settings.kafka, group) == {"first": set(range(6))},
        60,
        "the first worker to take over all six partitions",
    )

    published = publisher.published()
    ends = last_offsets(published)
    wait_until(caught_up(store, view, ends), 120, "the first worker to catch up")
    # The second stopped mid-stream: the first applied the rest of the second's partitions.
    assert any(left_behind.get(p, NO_POSITION).offset < ends[p] for p in held["second"])
    assert_running(cli, workers["first"], "first")
    workers["first"].send_signal(signal.SIGTERM)
    assert workers["first"].wait(30) == 0, cli.log("first")[-4000:]

    applied, _late = apply_lateness(published, view.view.lateness_us)
    newest = max(e.ts for e in published)
    for later_s in (0, 30 * 60, 100 * 60):
        assert_matches_reference(
            settings, view.view, published, newest + later_s * US, version=view.version
        )
    assert_offline_log_holds(settings, view, applied)


def test_a_backfill_racing_live_ingestion_applies_every_event_once(
    cli: Cli, topic_name: Callable[[str], str]
) -> None:
    """`fstore backfill` and `fstore ingest` of one view version consume the same partitions.

    Nothing but the position check of the merge keeps them from applying a batch twice: the
    second to merge a range finds the positions moved, re-reads them and applies only the rest.
    """
    settings = cli.settings
    topic = topic_name("txns")
    ensure_topic(settings.kafka, topic, partitions=3)
    view = cli.apply_repo(topic)
    store = OnlineStore(settings.redis)
    events = random_events(random.Random(11), 100_000, users=500, spacing_s=0.2)
    where = publish(settings.kafka, topic, [event_payload(e) for e in events])
    published = as_published(events, where)
    # The backfill starts where live ingestion stands, once that is under way with small batches;
    # its large batches then overtake the live ones again and again, so the two keep colliding.
    live = cli.start("live", "ingest", "--group", f"{topic}.ingest", "--batch-size", "500")
    wait_until(lambda: applied_through(store, view) > 0, 60, "live ingestion to begin")
    backfill = cli.start("backfill", "backfill", view.name)
    assert backfill.wait(120) == 0, cli.log("backfill")[-4000:]
    wait_until(caught_up(store, view, last_offsets(published)), 120, "live ingestion to catch up")
    assert_running(cli, live, "live")
    live.send_signal(signal.SIGTERM)
    assert live.wait(30) == 0, cli.log("live")[-4000:]

    applied, _late = apply_lateness(published, view.view.lateness_us)
    newest = max(e.ts for e in published)
    for later_s in (0, 30 * 60, 100 * 60):
        assert_matches_reference(
            settings, view.view, published, newest + later_s * US, version=view.version
        )
    # A batch that loses the race has written its events to the offline log already (the log
    # comes first): rows on disk beyond the applied events show that collisions happened.
    on_disk = assert_offline_log_holds(settings, view, applied)
    assert on_disk > len(applied), "the two never collided: the test proved nothing"
    conflicts = re.search(r"conflicts=(\d+)", cli.log("live"))
    print(
        f"\n{on_disk - len(applied):,} events applied by one, written again by the other; "
        f"live ingestion redid {conflicts[1] if conflicts else '?'} batches"
    )
