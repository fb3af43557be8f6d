"""`fstore backfill`: build a view version's online state from history.

Two sources, both ending where live ingestion takes over (the version's stored positions):
- the topic, replayed from its beginning — exact, as long as Kafka still retains every event;
- the offline log of an earlier version — for when Kafka's retention has dropped old events.
  It holds only the events that version applied, so a new version with a longer allowed lateness
  cannot recover events the old one rejected as late.

Replaying the topic is a consumer-group run of the ingest worker; replaying the log needs no
Kafka at all and hands each chunk straight to the view version's writer, streaming the log in
(partition, offset) order in chunks of `LOG_BATCH` events (bounded memory, whatever its size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from featurestore.config import Settings
from featurestore.offline.log import OfflineStore, batch_from_log
from featurestore.online import OnlineStore
from featurestore.registry import RegisteredView
from featurestore.writer import ViewWriter
from streaming.errors import StreamingError
from streaming.ingest.worker import Worker

__all__ = ["LOG_BATCH", "Backfilled", "backfill_from_log", "backfill_from_topic"]

LOG_BATCH = 50_000


@dataclass
class Backfilled:
    applied: int = 0  # events merged into the version's online state
    late: int = 0  # events the version's lateness rejected
    quarantined: list[str] = field(default_factory=list)  # unreadable log files moved aside


def backfill_from_topic(
    settings: Settings, target: RegisteredView, batch_size: int = 20_000
) -> Backfilled:
    """Replay the source topic until this version has applied everything published so far."""
    topic = target.view.source.topic
    ends = _end_offsets(settings, topic)
    worker = Worker(
        settings,
        [(target.view, target.version)],
        group=f"fstore-backfill.{target.name}.{target.version}",
        batch_size=batch_size,
    )
    [writer] = worker.views[topic]

    def caught_up(_worker: Worker) -> bool:
        return all(
            writer.positions.get(p) is not None and writer.positions[p].offset >= end - 1
            for p, end in ends.items()
            if end > 0
        )

    if not caught_up(worker):
        worker.run(until=caught_up)
    return Backfilled(worker.counters.applied, worker.counters.late)


def backfill_from_log(
    settings: Settings, target: RegisteredView, source_version: int
) -> Backfilled:
    """Feed the offline log of `source_version` through the target version's writer."""
    view = target.view
    offline = OfflineStore(settings.offline)
    empty = StreamingError(f"the offline log of {view.name} v{source_version} is empty")
    if not offline.files(view.name, source_version):
        raise empty
    writer = ViewWriter(OnlineStore(settings.redis), offline, view, target.version)
    writer.load_positions()
    done = Backfilled()
    read = 0
    for chunk in offline.scan_events(view.name, source_version, LOG_BATCH):
        read += chunk.num_rows
        batch = batch_from_log(chunk, view.source.timestamp_field)
        applied = writer.apply(batch, batch.last_offsets())
        done.applied += applied.applied
        done.late += len(applied.late)
    done.quarantined = [str(q) for q in offline.quarantined]
    if read == 0:
        raise empty
    return done


def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(settings.kafka.client_config(**{"group.id": "fstore-backfill-probe"}))
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        if not partitions:
            raise StreamingError(f"topic {topic!r} does not exist on {settings.kafka.bootstrap}")
        ends = {}
        for partition in partitions:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            ends[partition] = high
        return ends
    finally:
        consumer.close()
