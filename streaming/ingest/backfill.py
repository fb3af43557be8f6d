"""`fstore backfill`: build a view version's online state from history.

Two sources, both ending where live ingestion takes over (the version's stored positions):
- the topic, replayed from its beginning — exact, as long as Kafka still retains every event;
- the offline log of an earlier version — for when Kafka's retention has dropped old events.
  It holds only the events that version applied, so a new version with a longer allowed lateness
  cannot recover events the old one rejected as late.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, TopicPartition

from featurestore.config import Settings
from featurestore.offline.log import OFFSET, PARTITION, TIMESTAMP, OfflineStore
from featurestore.registry import RegisteredView
from streaming.errors import StreamingError
from streaming.ingest.decode import Decoded
from streaming.ingest.worker import Counters, Worker

LOG_BATCH = 50_000


def backfill_from_topic(
    settings: Settings, target: RegisteredView, batch_size: int = 20_000
) -> Counters:
    """Replay the source topic until this version has applied everything published so far."""
    topic = target.view.source.topic
    ends = _end_offsets(settings, topic)
    worker = Worker(
        settings,
        [(target.view, target.version)],
        group=f"fstore-backfill.{target.name}.{target.version}",
        batch_size=batch_size,
    )
    [state] = worker.views[topic]

    def caught_up(_worker: Worker) -> bool:
        return all(
            state.positions.get(p) is not None and state.positions[p].offset >= end - 1
            for p, end in ends.items()
            if end > 0
        )

    if not caught_up(worker):
        worker.run(until=caught_up)
    return worker.counters


def backfill_from_log(settings: Settings, target: RegisteredView, source_version: int) -> Counters:
    """Feed the offline log of `source_version` through the target version's aggregation."""
    view = target.view
    topic = view.source.topic
    events = OfflineStore(settings.offline).read_events(view.name, source_version)
    if events.num_rows == 0:
        raise StreamingError(f"the offline log of {view.name} v{source_version} is empty")
    worker = Worker(settings, [(view, target.version)], group="fstore-backfill")
    [state] = worker.views[topic]
    state.positions = worker.online.positions(view.name, target.version)
    for start in range(0, events.num_rows, LOG_BATCH):
        chunk = events.slice(start, LOG_BATCH)
        decoded = decoded_from_log(chunk, view.source.timestamp_field)
        last_offsets: dict[int, int] = {}
        for partition, offset in zip(
            decoded.partition.tolist(), decoded.offset.tolist(), strict=True
        ):
            last_offsets[partition] = max(offset, last_offsets.get(partition, -1))
        worker.apply(topic, state, decoded, last_offsets)
    return worker.counters


def decoded_from_log(table: pa.Table, timestamp_field: str) -> Decoded:
    """Offline-log rows (sorted by partition, offset) in the worker's batch form."""
    skip = {TIMESTAMP, PARTITION, OFFSET, timestamp_field}
    columns = {name: table[name].to_pylist() for name in table.column_names if name not in skip}
    micros = pc.cast(table[TIMESTAMP], pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return Decoded(
        columns,
        micros.to_numpy(),
        table[PARTITION].to_numpy().astype("int64"),
        table[OFFSET].to_numpy().astype("int64"),
        messages=[],
    )


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
