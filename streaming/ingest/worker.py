"""The ingest worker: Kafka batches -> tile states in Redis + raw events in Parquet.

Per batch: decode the messages, dead-letter the ones that are not events, and hand the events
to the writer of each view version on the topic (`featurestore.writer.ViewWriter`: lateness,
the offline log, the atomic online merge that moves the stored positions). Redis, not Kafka's
committed offsets, is the source of truth for where a view stands: on assignment the consumer
seeks to the stored positions, so a crash anywhere replays at most the batch in flight and the
writer applies it once. The consumer lifecycle is `streaming.consume.ConsumerLoop`'s.

When Redis lost a view's state (restarted without its data, a failover to a replica that
lagged), the writer finds it — at assignment, in a merge, or in the check this worker runs every
`state_check_s` between polls — and rebuilds it from the offline log before anything else
(the rule is featurestore/writer.py's); the worker counts it (`Counters.state_rebuilds`, the
`fstore_ingest_state_rebuilds` metric) and resumes after the rebuilt positions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from featurestore.config import Settings
from featurestore.definitions import FeatureView, KafkaSource
from featurestore.offline import OfflineStore, compact_due
from featurestore.online import OnlineStore
from featurestore.positions import NO_POSITION
from featurestore.tiles import I64
from featurestore.writer import ViewWriter
from streaming.consume import ConsumerLoop, Rejected, messages_by_topic
from streaming.errors import StreamingError
from streaming.ingest.decode import MAX_MESSAGE_BYTES, Decoded, decode

__all__ = ["COMPACT_EVERY_S", "STATE_CHECK_S", "Counters", "Worker"]

log = logging.getLogger("fstore.worker")

STATE_CHECK_S = 5.0  # how often, between polls, the worker checks that Redis kept its state
# How often, between polls, the worker merges the small log files of finished dates
# (`featurestore.offline.compact_due`: a batch makes one file per date, thousands a day).
COMPACT_EVERY_S = 3600.0


@dataclass
class Counters:
    consumed: int = 0
    applied: int = 0
    late: int = 0
    dead_lettered: int = 0
    batches: int = 0
    batch_seconds: float = 0.0
    conflicts: int = 0
    state_rebuilds: int = 0  # view states found lost in Redis and rebuilt from the offline log
    log_files_compacted: int = 0  # small offline-log files merged into bigger ones


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
        self.max_message_bytes = max_message_bytes
        self.sources: dict[str, KafkaSource] = {}
        for view, _version in views:
            topic = view.source.topic
            known = self.sources.setdefault(topic, view.source)
            if known != view.source:
                raise StreamingError(
                    f"views on topic {topic!r} declare different sources ({known.name!r} and "
                    f"{view.source.name!r}); one topic has one schema"
                )
        self.loop = ConsumerLoop(
            settings.kafka,
            group,
            list(self.sources),
            self.process,
            self._seek,
            batch_size=batch_size,
            poll_timeout=poll_timeout,
            instance_id=instance_id,
            after_poll=self._after_poll,
            logger=log,
        )
        self.online = OnlineStore(settings.redis)
        self.offline = OfflineStore(settings.offline)
        self.views: dict[str, list[ViewWriter]] = {}
        for view, version in views:
            writer = ViewWriter(self.online, self.offline, view, version, retry=self.loop.retry)
            self.views.setdefault(view.source.topic, []).append(writer)
        self.counters = Counters()
        # None: only assignments and merges find a lost state (tests of those paths).
        self.state_check_s: float | None = STATE_CHECK_S
        self._checked = time.monotonic()
        self.compact_every_s: float | None = COMPACT_EVERY_S  # None: never (tests, benchmarks)
        self._compacted = time.monotonic()

    @property
    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> messages behind, as librdkafka last reported it."""
        return self.loop.lag

    def run(self, until: Callable[[Worker], bool] | None = None) -> None:
        """Consume until SIGTERM/SIGINT (or until `until(self)` is true)."""
        self.loop.run(until=None if until is None else lambda: until(self))

    def stop(self) -> None:
        self.loop.stop()

    def _seek(self, partitions: list[TopicPartition]) -> None:
        """Resume each partition after the oldest position of its views (Redis is the truth;
        a state Redis lost is rebuilt from the log first, by `load_positions`)."""
        for topic in {tp.topic for tp in partitions}:
            for writer in self.views[topic]:
                writer.load_positions()
        self._count_rebuilds()
        for tp in partitions:
            stored = [
                writer.positions.get(tp.partition, NO_POSITION).offset
                for writer in self.views[tp.topic]
            ]
            tp.offset = min(stored) + 1 if min(stored) >= 0 else OFFSET_BEGINNING

    def _after_poll(self, _got_messages: bool) -> None:
        """Every `state_check_s`: has Redis lost a view's state while this worker waited for
        events? Found here, it is rebuilt before the next batch rather than when it comes."""
        self._compact()
        if self.state_check_s is None or time.monotonic() - self._checked < self.state_check_s:
            return
        for writers in self.views.values():
            for writer in writers:
                writer.check_state()
        self._checked = time.monotonic()
        self._count_rebuilds()

    def _compact(self) -> None:
        """Every `compact_every_s`: merge the small log files of the dates before today. Never in
        place, and readers see each (partition, offset) once, so a crash or a concurrent worker
        changes no result (featurestore/offline/compaction.py)."""
        if (
            self.compact_every_s is None
            or time.monotonic() - self._compacted < self.compact_every_s
        ):
            return
        for writers in self.views.values():
            for writer in writers:
                report = compact_due(self.offline, writer.view.name, writer.version)
                merged = sum(c.files for c in report.compacted)
                if merged:
                    log.info(
                        "%s v%d: %d log files merged", writer.view.name, writer.version, merged
                    )
                self.counters.log_files_compacted += merged
        self._compacted = time.monotonic()

    def _count_rebuilds(self) -> None:
        self.counters.state_rebuilds = sum(w.rebuilds for ws in self.views.values() for w in ws)

    def process(self, messages: list[Message]) -> None:
        began = time.perf_counter()
        for topic, batch in messages_by_topic(messages).items():
            decoded = decode(batch, self.sources[topic], self.max_message_bytes)
            last_offsets: dict[int, int] = {}
            for message in batch:
                last_offsets[message.partition() or 0] = message.offset() or 0
            # Dead letters go out before any position moves past them: a crash in between
            # re-sends them (the dead-letter topic is at-least-once) but never loses one.
            self.counters.dead_lettered += self.loop.dead_letter(topic, decoded.rejected)
            for writer in self.views[topic]:
                self._apply(topic, writer, decoded, last_offsets)
            self.counters.consumed += len(batch)  # counted once the batch is fully handled
        self.counters.batches += 1
        self.counters.batch_seconds += time.perf_counter() - began

    def _apply(
        self, topic: str, writer: ViewWriter, decoded: Decoded, last_offsets: dict[int, int]
    ) -> None:
        def dead_letter_late(late: I64) -> None:
            reason = f"view {writer.view.name}"
            rejected = [Rejected(decoded.messages[i], "late", reason) for i in late.tolist()]
            self.counters.dead_lettered += self.loop.dead_letter(topic, rejected)

        done = writer.apply(decoded.events, last_offsets, on_late=dead_letter_late)
        self.counters.applied += done.applied
        self.counters.late += len(done.late)
        self.counters.conflicts += done.conflicts
        self._count_rebuilds()
