"""The ingest worker: Kafka batches -> tile states in Redis + raw events in Parquet.

Per batch and view: drop what the view already applied (its stored offsets), decide lateness
against the partition watermark, write the applied events to the offline log, then merge their
tile states and move the stored positions in one atomic Redis call (`OnlineStore.merge_batch`).
Redis, not Kafka's committed offsets, is the source of truth for where a view stands: on
assignment the consumer seeks to the stored positions, so a crash anywhere replays at most the
batch in flight and the atomic merge applies it once. Kafka offsets are committed too, but only
so that consumer lag is visible to the usual tools.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import TypeVar

import numpy as np
import pyarrow as pa
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    Message,
    Producer,
    TopicPartition,
)

from featurestore.config import Settings
from featurestore.definitions import FeatureView, KafkaSource, ValueType
from featurestore.errors import OnlineStoreError
from featurestore.keys import entity_keys
from featurestore.offline.log import OFFSET, PARTITION, TIMESTAMP, OfflineStore
from featurestore.online import BUCKET_FIELD, BUCKET_TILES, OnlineStore
from featurestore.positions import NO_POSITION, Position
from featurestore.tiles import I64, TileLayout
from streaming.consume import consumer_lag, dead_letter, messages_by_topic
from streaming.errors import StreamingError
from streaming.ingest.decode import MAX_MESSAGE_BYTES, Decoded, Rejected, decode
from streaming.topics import ensure_topic

log = logging.getLogger("fstore.worker")
_T = TypeVar("_T")

_ARROW_TYPES = {
    ValueType.STRING: pa.string(),
    ValueType.INT64: pa.int64(),
    ValueType.FLOAT64: pa.float64(),
    ValueType.BOOL: pa.bool_(),
    ValueType.TIMESTAMP: pa.string(),
}


@dataclass
class ViewState:
    view: FeatureView
    version: int
    layout: TileLayout
    positions: dict[int, Position] = field(default_factory=dict)


@dataclass
class Counters:
    consumed: int = 0
    applied: int = 0
    late: int = 0
    dead_lettered: int = 0
    batches: int = 0
    batch_seconds: float = 0.0
    conflicts: int = 0


class Worker:
    """Consumes the topics of `views` in consumer group `group`."""

    def __init__(
        self,
        settings: Settings,
        views: Sequence[tuple[FeatureView, int]],
        group: str = "fstore-ingest",
        batch_size: int = 20_000,
        poll_timeout: float = 0.05,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        instance_id: str | None = None,
    ) -> None:
        if not views:
            raise StreamingError("no feature views to ingest; run `fstore apply` first")
        self.settings = settings
        self.group = group
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.max_message_bytes = max_message_bytes
        # Static group membership: a restarted worker with the same id takes its old partitions
        # back at once instead of waiting out the session timeout of its dead predecessor.
        self.instance_id = instance_id
        self.online = OnlineStore(settings.redis)
        self.offline = OfflineStore(settings.offline)
        self.sources: dict[str, KafkaSource] = {}
        self.views: dict[str, list[ViewState]] = {}
        for view, version in views:
            topic = view.source.topic
            known = self.sources.setdefault(topic, view.source)
            if known != view.source:
                raise StreamingError(
                    f"views on topic {topic!r} declare different sources ({known.name!r} and "
                    f"{view.source.name!r}); one topic has one schema"
                )
            self.views.setdefault(topic, []).append(ViewState(view, version, TileLayout(view)))
        self.counters = Counters()
        self.lag: dict[tuple[str, int], int] = {}  # from librdkafka statistics
        self._stopping = False
        self._producer = Producer(settings.kafka.client_config(**{"enable.idempotence": True}))
        self._consumer: Consumer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, until: Callable[[Worker], bool] | None = None) -> None:
        """Consume until SIGTERM/SIGINT (or until `until(self)` is true)."""
        for topic in self.views:
            ensure_topic(self.settings.kafka, f"{topic}.dlq")
        self._install_signal_handlers()
        consumer = Consumer(
            self.settings.kafka.client_config(
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
        self._consumer = consumer
        consumer.subscribe(list(self.views), on_assign=self._on_assign)
        try:
            while not self._stopping and not (until and until(self)):
                messages = consumer.consume(num_messages=self.batch_size, timeout=self.poll_timeout)
                if messages:
                    self.process(messages)
                    consumer.commit(asynchronous=True)
        finally:
            consumer.close()
            self._producer.flush(30)

    def stop(self) -> None:
        self._stopping = True

    def _install_signal_handlers(self) -> None:
        def handler(_signum: int, _frame: FrameType | None) -> None:
            self.stop()

        try:
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        except ValueError:
            pass  # not the main thread (tests run workers in threads): stop() is the way out

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Seek each partition to where the views stored they stand (Redis is the truth)."""
        for tp in partitions:
            states = self.views[tp.topic]
            offsets = []
            for state in states:
                state.positions = self._retry(
                    partial(self.online.positions, state.view.name, state.version)
                )
                offsets.append(state.positions.get(tp.partition, NO_POSITION).offset)
            tp.offset = min(offsets) + 1 if min(offsets) >= 0 else OFFSET_BEGINNING
        consumer.assign(partitions)
        log.info("assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    # -- one batch ---------------------------------------------------------------------------

    def _on_stats(self, text: str) -> None:
        self.lag.update(consumer_lag(text))

    def process(self, messages: list[Message]) -> None:
        began = time.perf_counter()
        for topic, batch in messages_by_topic(messages).items():
            decoded = decode(batch, self.sources[topic], self.max_message_bytes)
            last_offsets: dict[int, int] = {}
            for message in batch:
                last_offsets[message.partition() or 0] = message.offset() or 0
            # Dead letters go out before any position moves past them: a crash in between
            # re-sends them (the dead-letter topic is at-least-once) but never loses one.
            self._dead_letter(topic, decoded.rejected)
            for state in self.views[topic]:
                self.apply(topic, state, decoded, last_offsets)
            self.counters.consumed += len(batch)  # counted once the batch is fully handled
        self.counters.batches += 1
        self.counters.batch_seconds += time.perf_counter() - began

    def apply(
        self, topic: str, state: ViewState, decoded: Decoded, last_offsets: dict[int, int]
    ) -> None:
        """Apply decoded events to one view, exactly once, moving its positions to `last_offsets`.

        Late events are dead-lettered when their Kafka messages are at hand (not in a backfill
        from the offline log, where they are only counted).
        """
        for _attempt in range(20):
            applied, late, moves = self._select(state, decoded, last_offsets)
            if not moves:
                return
            if decoded.messages:
                late_messages = [decoded.messages[i] for i in late]
                self._dead_letter(
                    topic, [Rejected(m, "late", f"view {state.view.name}") for m in late_messages]
                )
            keys, ttls, rows, distinct = self._tile_rows(state, decoded, applied, moves)
            self.offline.append(
                state.view.name, state.version, self._events(state, decoded, applied)
            )
            conflict = self._retry(
                partial(
                    self.online.merge_batch,
                    state.view.name,
                    state.version,
                    state.layout,
                    keys,
                    ttls,
                    rows,
                    moves,
                    distinct,
                )
            )
            if conflict is None:
                state.positions.update({p: new for p, (_old, new) in moves.items()})
                self.counters.applied += len(applied)
                self.counters.late += len(late)
                return
            # Another worker moved this view (rebalance) or we replayed: re-read and redo.
            self.counters.conflicts += 1
            state.positions = self._retry(
                partial(self.online.positions, state.view.name, state.version)
            )
        raise StreamingError(f"view {state.view.name}: positions keep changing under this worker")

    def _select(
        self, state: ViewState, decoded: Decoded, last_offsets: dict[int, int]
    ) -> tuple[I64, I64, dict[int, tuple[Position, Position]]]:
        """Fresh events of each partition split into applied and late, and the new positions."""
        applied: list[I64] = []
        late: list[I64] = []
        moves: dict[int, tuple[Position, Position]] = {}
        lateness = state.view.lateness_us
        for partition, last in last_offsets.items():
            old = state.positions.get(partition, NO_POSITION)
            if last <= old.offset:
                continue  # replayed: this view already has the whole batch of this partition
            index = np.flatnonzero((decoded.partition == partition) & (decoded.offset > old.offset))
            ts = decoded.ts[index]
            watermark = old.watermark
            if len(ts):
                # Watermark before each event: the newest event time of the earlier ones.
                before = np.maximum.accumulate(np.concatenate(([old.watermark], ts[:-1])))
                is_late = ts < before - lateness
                applied.append(index[~is_late])
                late.append(index[is_late])
                watermark = max(old.watermark, int(ts.max()))
            moves[partition] = (old, Position(last, watermark))
        empty = np.zeros(0, dtype=np.int64)
        return (
            np.sort(np.concatenate(applied)) if applied else empty,
            np.concatenate(late) if late else empty,
            moves,
        )

    def _tile_rows(
        self,
        state: ViewState,
        decoded: Decoded,
        applied: I64,
        moves: dict[int, tuple[Position, Position]],
    ) -> tuple[list[str], list[int], np.ndarray, list[tuple[int, str, str, list[str]]]]:
        layout, view = state.layout, state.view
        if len(applied) == 0:
            return [], [], np.zeros((0, layout.width + 2)), []
        entity = pa.array(
            self._entity_keys(state, decoded, applied), pa.string()
        ).dictionary_encode()
        codes = entity.indices.to_numpy().astype(np.int64)
        names: list[str] = entity.dictionary.to_pylist()
        ts = decoded.ts[applied]
        tile = ts // layout.tile_us
        bucket = tile // BUCKET_TILES
        partition, offset = decoded.partition[applied], decoded.offset[applied]
        columns = {
            c: np.asarray(decoded.columns[c], dtype=np.float64)[applied] for c in layout.columns
        }

        bucket_ids, bucket_first, bucket_group = _groups(codes, bucket)
        tile_ids, tile_first, tile_group = _groups(codes, tile)
        del bucket_ids, tile_ids
        keys = [f"{names[codes[i]]}:{bucket[i]}" for i in bucket_first]
        key_of_tile_group = bucket_group[tile_first]

        tile_states = layout.reduce(tile_group, len(tile_first), ts, partition, offset, columns)
        bucket_states = layout.reduce(
            bucket_group, len(bucket_first), ts, partition, offset, columns
        )
        rows = np.empty((len(tile_first) + len(bucket_first), layout.width + 2))
        n = len(tile_first)
        rows[:n, 0] = key_of_tile_group
        rows[:n, 1] = tile[tile_first] - bucket[tile_first] * BUCKET_TILES
        rows[:n, 2:] = tile_states
        rows[n:, 0] = np.arange(len(bucket_first))
        rows[n:, 1] = -1
        rows[n:, 2:] = bucket_states

        # A key lives while some window can still reach its bucket by the stream's own clock,
        # and at least one longest window (+ lateness) of wall time, so replays stay readable.
        watermark = max(new.watermark for _old, new in moves.values())
        keep = view.max_window_us + view.lateness_us
        bucket_end = (bucket[bucket_first] + 1) * BUCKET_TILES * layout.tile_us
        ttls = (np.maximum(bucket_end + keep - watermark, 0) + keep) // 1000

        distinct: list[tuple[int, str, str, list[str]]] = []
        tile_fields = [str(int(f)) for f in rows[:n, 1]]
        for column in layout.distinct_columns:
            values = decoded.columns[column]
            per_tile: dict[int, set[str]] = {}
            per_bucket: dict[int, set[str]] = {}
            for row, event in enumerate(applied):
                text = str(values[event])
                per_tile.setdefault(int(tile_group[row]), set()).add(text)
                per_bucket.setdefault(int(bucket_group[row]), set()).add(text)
            for group, members in per_tile.items():
                key = int(key_of_tile_group[group])
                distinct.append((key, tile_fields[group], column, sorted(members)))
            for group, members in per_bucket.items():
                distinct.append((group, BUCKET_FIELD, column, sorted(members)))
        return keys, [int(t) for t in ttls], rows, distinct

    def _entity_keys(self, state: ViewState, decoded: Decoded, applied: I64) -> list[str]:
        join_keys = state.view.join_keys
        taken = applied.tolist()
        return entity_keys(
            {k: [decoded.columns[k][i] for i in taken] for k in join_keys}, join_keys
        )

    def _events(self, state: ViewState, decoded: Decoded, applied: I64) -> pa.Table:
        schema = state.view.source.schema_
        take = pa.array(applied)
        arrays = {
            name: pa.array(values, _ARROW_TYPES[schema[name]]).take(take)
            for name, values in decoded.columns.items()
        }
        arrays[TIMESTAMP] = pa.array(decoded.ts[applied], pa.timestamp("us", tz="UTC"))
        arrays[PARTITION] = pa.array(decoded.partition[applied], pa.int32())
        arrays[OFFSET] = pa.array(decoded.offset[applied], pa.int64())
        return pa.table(arrays)

    # -- dead letters, retries ---------------------------------------------------------------

    def _dead_letter(self, topic: str, rejected: list[Rejected]) -> None:
        dead_letter(self._producer, topic, rejected)
        self.counters.dead_lettered += len(rejected)

    def _retry(self, call: Callable[[], _T]) -> _T:
        delay = 0.2
        while True:
            try:
                return call()
            except OnlineStoreError as exc:
                if self._stopping:
                    raise
                log.warning("%s; retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def _groups(codes: I64, values: I64) -> tuple[I64, I64, I64]:
    """Group rows by (entity code, value): ids, first row of each group, group of each row."""
    span = int(values.max() - values.min()) + 1
    composite = codes * span + (values - values.min())
    ids, first, group = np.unique(composite, return_index=True, return_inverse=True)
    return ids, first, group.astype(np.int64)
