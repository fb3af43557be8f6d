"""The monitor: prediction log (and labels) -> windowed drift statistics, alerts, live metrics.

Per batch: decode, drop what the stored positions say was counted already, decide lateness
per partition against its watermark (as the ingest worker does), accumulate each model
version's columns per tumbling window (by the records' event time), and merge the
accumulators while moving the positions in one atomic Redis call (`MonitorState.merge`). A
crash replays at most the batch in flight, which that check then applies once: no prediction
is counted twice in a window.

A window closes when the stream's watermark (the lowest of its partitions') passes its end
plus `allowed_lateness`; no record that is not late can land in it after that. A partition
with no new record for `monitor.idle_timeout` (by the wall clock, and with nothing left for it
in Kafka) stops holding the watermark back, so one idle partition does not stall every window.
The trade-off: a record it brings later into a window closed meanwhile counts as late (as any
record older than the watermark allows does); a longer timeout waits longer for a slow
producer before reporting. Closing reports every column of every model version and role in it
(`report.py`), sends the records and alert events to Kafka and waits until Kafka has each one
(`streaming.consume.Outbox`: a Kafka outage is waited out, never dropped), and then commits
the latest state, the episodes and the markers in one more atomic call. Outputs are at least
once (a crash between the two resends the same records); counts are exactly once.

`watch` mode reads a feature view's source topic instead, and profiles its raw columns.
The consumer lifecycle is `streaming.consume.ConsumerLoop`'s, as the ingest worker's is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from featurestore.config import Settings, WatchSettings
from featurestore.drift.history import record_alerts, record_history
from featurestore.errors import OnlineStoreError
from featurestore.models.registry import ModelRegistry
from featurestore.positions import NO_POSITION, Position
from featurestore.registry import RegisteredView
from streaming.consume import ConsumerLoop, Outgoing, messages_by_topic
from streaming.errors import StreamingError
from streaming.ingest.decode import decode
from streaming.monitor.alerts import AlertSink, Episodes
from streaming.monitor.labels import index_appends, join_labels, pending_labels
from streaming.monitor.records import (
    Labels,
    Predictions,
    decode_labels,
    decode_predictions,
)
from streaming.monitor.references import ModelReferences, References, Watched, input_reference
from streaming.monitor.report import Reporter
from streaming.monitor.state import MonitorState, Snapshot
from streaming.monitor.windows import (
    Idleness,
    Moves,
    accumulators,
    move_rejected,
    select,
    stream_watermark,
)
from streaming.topics import ensure_topic

__all__ = ["Monitor", "MonitorCounters"]

log = logging.getLogger("fstore.monitor")


@dataclass
class MonitorCounters:
    consumed: int = 0  # messages handled (predictions, labels, source events)
    counted: int = 0  # records added to a window
    late: int = 0
    dead_lettered: int = 0
    unmonitored: int = 0  # records of model versions without a reference profile
    request_fed: int = 0  # records with caller-sent features, left out (see records.py)
    labels: int = 0  # labels parked for the join
    labels_matched: int = 0
    labels_unmatched: int = 0
    labels_late: int = 0
    windows_closed: int = 0
    expired: int = 0  # closed windows and pairs found expired when closing (see state.py)
    records: int = 0  # drift and performance records sent
    alerts: int = 0  # alert and resolved events sent
    batches: int = 0
    batch_seconds: float = 0.0
    conflicts: int = 0


class Monitor:
    """Consumes the prediction log (and labels), or with `watch` a view's source topic."""

    def __init__(
        self,
        settings: Settings,
        group: str = "fstore-monitor",
        batch_size: int = 20_000,
        poll_timeout: float = 0.1,
        instance_id: str | None = None,
        watch: RegisteredView | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.monitor
        self.group = group
        self.watch = watch
        self.window_us = self.config.window_us
        self.lateness_us = self.config.lateness_us
        self.horizon_us = self.config.horizon_us
        self.references: References
        if watch is None:
            self.topic = settings.serving.prediction_log_topic
            if not self.topic:
                raise StreamingError(
                    "serving.prediction_log_topic is empty: there is no prediction log to "
                    "monitor; set it (default fstore.predictions) or use --watch VIEW"
                )
            self.labels_topic = self.config.labels_topic
            self.models = ModelReferences(ModelRegistry(settings.models))
            self.references = self.models
        else:
            self.topic, self.labels_topic = watch.view.source.topic, ""
            watching = self.config.watch.get(watch.name) or WatchSettings.model_validate({})
            self.reference = input_reference(settings, watch, watching)
            self.references = Watched(self.reference)
        self.loop = ConsumerLoop(
            settings.kafka,
            group,
            self.topics,
            self.process,
            self._seek,
            batch_size=batch_size,
            poll_timeout=poll_timeout,
            instance_id=instance_id,
            ready=self._count_partitions,
            after_poll=self._after_poll,
            logger=log,
        )
        self.state = MonitorState(settings.redis, group, self.config)
        self.outbox = self.loop.outbox  # dead letters, drift records, alerts: all confirmed
        self.episodes = Episodes(self.state.client, settings.redis.namespace)
        self.sink = AlertSink(self.config, self.outbox)
        self.reporter = Reporter(
            self.config, self.references, self.episodes, self.state, settings.redis.namespace
        )
        self.counters = MonitorCounters()
        self.latest: dict[tuple[str, str], dict[str, object]] = {}  # for Prometheus
        self.positions: dict[tuple[str, int], Position] = {}
        self.assignment: list[tuple[str, int]] = []  # (topic, partition) this worker consumes
        self.closed: int | None = None
        self.partitions = 0  # of the monitored topic: windows close once each has a record
        self.idleness = Idleness(self.config.idle_timeout_us / 1e6)
        self.idle: set[int] = set()  # partitions that no longer hold the watermark back
        self._consumer: Consumer | None = None
        self._last_close = 0.0
        self._waiting_logged = 0.0

    @property
    def topics(self) -> list[str]:
        return [self.topic] + ([self.labels_topic] if self.labels_topic else [])

    @property
    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> messages behind, as librdkafka last reported it."""
        return self.loop.lag

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, until: Callable[[Monitor], bool] | None = None) -> None:
        """Consume until SIGTERM/SIGINT (or until `until(self)` is true)."""
        # Ours to create when missing; the monitored topic is the serving app's (or a view's).
        for topic in (self.config.drift_topic, self.config.alerts_topic, self.labels_topic):
            if topic:
                ensure_topic(self.settings.kafka, topic)
        try:
            self.loop.run(until=None if until is None else lambda: until(self))
        finally:
            self.sink.close()

    def stop(self) -> None:
        self.loop.stop()

    def _count_partitions(self, consumer: Consumer) -> None:
        metadata = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        if metadata.error is not None:
            raise StreamingError(
                f"cannot read topic {self.topic!r} on {self.settings.kafka.bootstrap}: "
                f"{metadata.error.str()}; it appears once `fstore serve` logs its first "
                "prediction (serving.prediction_log_topic), or create it with the partitions "
                "you want"
            )
        self.partitions = len(metadata.partitions)
        self._consumer = consumer

    def _after_poll(self, got_messages: bool) -> None:
        # Closing needs the partitions other workers of the group moved too: look after every
        # batch, and now and then when idle.
        if got_messages or time.monotonic() - self._last_close > 1.0:
            self.loop.retry(self.close_windows)

    def _seek(self, partitions: list[TopicPartition]) -> None:
        """Seek each partition to where Redis says the monitor stands (Redis is the truth)."""
        snapshot = self.loop.retry(self.state.snapshot)
        self.positions = dict(snapshot.positions)
        self.closed = snapshot.closed
        for tp in partitions:
            stored = self.positions.get((tp.topic, tp.partition), NO_POSITION)
            tp.offset = stored.offset + 1 if stored.offset >= 0 else OFFSET_BEGINNING
        self.assignment = [(tp.topic, tp.partition) for tp in partitions]

    # -- one batch ---------------------------------------------------------------------------

    def process(self, messages: list[Message]) -> None:
        began = time.perf_counter()
        by_topic = messages_by_topic(messages)
        predictions = self._decode(by_topic.get(self.topic, []))
        labels = (
            decode_labels(by_topic[self.labels_topic]) if self.labels_topic in by_topic else None
        )
        # Dead letters go out before any position moves past them (at least once, never lost).
        for topic, rejected in ((self.topic, predictions.rejected),) + (
            ((self.labels_topic, labels.rejected),) if labels is not None else ()
        ):
            self.counters.dead_lettered += self.loop.dead_letter(topic, rejected)
        self._apply(by_topic, predictions, labels)
        self.counters.consumed += sum(len(batch) for batch in by_topic.values())
        self.counters.unmonitored += predictions.unmonitored
        self.counters.request_fed += predictions.request_fed
        self.counters.batches += 1
        self.counters.batch_seconds += time.perf_counter() - began

    def _decode(self, messages: list[Message]) -> Predictions:
        if self.watch is None:
            return decode_predictions(
                messages,
                self.models.names,
                bool(self.labels_topic),
                include_request_features=self.config.include_request_features,
            )
        decoded = decode(messages, self.watch.view.source)
        events, ref = decoded.events, self.reference
        rows = [
            list(values) for values in zip(*(events.columns[c] for c in ref.names), strict=True)
        ]
        return Predictions(
            events.ts,
            events.partition,
            events.offset,
            np.zeros(len(events), dtype=np.int64),
            [(ref.model, ref.version, "source")],
            [rows],
            np.arange(len(events), dtype=np.int64),
            rejected=decoded.rejected,
        )

    def _apply(
        self, by_topic: dict[str, list[Message]], predictions: Predictions, labels: Labels | None
    ) -> None:
        for _attempt in range(20):
            moves: Moves = {}
            kept, late = select(
                self.positions,
                self.topic,
                predictions.ts,
                predictions.partition,
                predictions.offset,
                moves,
                self.lateness_us,
                self.closed,
            )
            found = accumulators(predictions, kept, self.references, self.window_us)
            index = (
                index_appends(predictions, kept.tolist(), self.horizon_us)
                if self.labels_topic and len(kept)
                else {}
            )
            pending: list[tuple[int, bytes]] = []
            if labels is not None:
                fresh, _ = select(
                    self.positions,
                    self.labels_topic,
                    labels.ts,
                    labels.partition,
                    labels.offset,
                    moves,
                    lateness_us=None,  # a label waits for its predictions, however late
                )
                pending = pending_labels(labels, fresh.tolist())
            # Partitions whose messages were all rejected still move on.
            for topic, batch in by_topic.items():
                move_rejected(self.positions, topic, batch, moves)
            if not moves:
                return
            conflict = self.loop.retry(
                partial(self.state.merge, moves, self.closed, found, index, pending)
            )
            if conflict is None:
                self.positions.update({key: new for key, (_old, new) in moves.items()})
                self.counters.counted += len(kept)
                self.counters.late += len(late)
                self.counters.labels += len(pending)
                return
            # Another worker moved a partition (a rebalance) or closed a window: re-read, redo.
            self.counters.conflicts += 1
            snapshot = self.loop.retry(self.state.snapshot)
            self.positions, self.closed = dict(snapshot.positions), snapshot.closed
        raise StreamingError(f"group {self.group}: positions keep changing under this monitor")

    # -- closing windows ---------------------------------------------------------------------

    def close_windows(self) -> None:
        """Report and commit every window the watermark has passed (nothing if none)."""
        self._last_close = time.monotonic()
        seen = self.state.snapshot()
        watermark = self._watermark(seen)
        if watermark is None:
            return
        closed = (watermark - self.lateness_us) // self.window_us * self.window_us
        if seen.closed is not None and closed <= seen.closed:
            return
        performed = None
        if self.labels_topic:
            performed = (closed - self.horizon_us) // self.window_us * self.window_us
            if seen.performed is not None:
                performed = max(performed, seen.performed)
        closing = self.state.read_closing(closed, closed - 1, performed)
        if closing.expired:
            self.counters.expired += closing.expired
            log.warning(
                "%d closed windows or label pairs expired before this step (the monitor was "
                "stopped longer than monitor.state_grace, %s): the reports miss them",
                closing.expired,
                self.config.state_grace,
            )
        joined = None
        if self.labels_topic and performed is not None:
            joined = join_labels(
                self.state, closing.labels, self.horizon_us, self.window_us, seen.performed
            )
        report = self.reporter.report(seen, closing, joined, closed, performed)
        for member, _at in closing.labels:
            report.ops.append(["zrem", self.state.labels_key, member.decode()])
        for bucket in self.state.buckets_before(closed // self.horizon_us - 1):
            report.ops += [
                ["del", self.state.bucket_key(bucket)],
                ["zrem", f"{self.state.prefix}:buckets", str(bucket)],
            ]
        drift = self.config.drift_topic
        identity = ("model", "version", "role", "kind", "column")
        self.outbox.send(
            [
                Outgoing(drift, orjson.dumps(r), "|".join(str(r[k]) for k in identity).encode())
                for r in report.records
            ],
            f"drift records for {drift}",
        )
        self.sink.publish(report.events)
        self.sink.notify(report.events)
        if not self.state.commit(seen, closing.rev, closed, performed, report.ops):
            self.counters.conflicts += 1
            self.episodes.forget()  # another worker closed them: its state is the truth
            return
        self.closed = closed
        self._record_history(report.records, report.events)
        self.latest.update(report.latest)
        self.counters.windows_closed += len({r["window_start"] for r in report.records})
        self.counters.records += len(report.records)
        self.counters.alerts += len(report.events)
        if joined is not None:
            self.counters.labels_matched += joined.matched
            self.counters.labels_unmatched += joined.unmatched
            self.counters.labels_late += joined.late
        for event in report.events:
            log.info(
                "%s: %s@%s %s %s %s",
                event["event"],
                event["model"],
                event["version"],
                event["role"],
                event["kind"],
                event["column"],
            )

    def _watermark(self, seen: Snapshot) -> int | None:
        """The stream's watermark as `seen`, without the partitions idle for the timeout."""
        if not self.partitions:
            return None
        stored = seen.marks(self.topic)
        offsets = {p: position.offset for p, position in stored.items()}
        partitions = sorted(set(range(self.partitions)) | set(stored))
        idle = {
            p
            for p in self.idleness.quiet(offsets, partitions)
            if self._drained(p, offsets.get(p, -1))
        }
        if idle - self.idle:
            log.info(
                "partitions %s of %s idle for %s: windows close without them (a record they "
                "bring into a closed window counts as late)",
                sorted(idle - self.idle),
                self.topic,
                self.config.idle_timeout,
            )
        if self.idle - idle:
            log.info("partitions %s of %s active again", sorted(self.idle - idle), self.topic)
        self.idle = idle
        marks = {p: position.watermark for p, position in stored.items()}
        watermark = stream_watermark(marks, partitions, idle)
        missing = [p for p in partitions if p not in marks and p not in idle]
        if missing and time.monotonic() - self._waiting_logged > 60:
            # A partition without a record yet may still bring any event time: wait for it.
            self._waiting_logged = time.monotonic()
            log.info(
                "windows close once partitions %s of %s have a record (or idle for %s)",
                missing,
                self.topic,
                self.config.idle_timeout,
            )
        return watermark

    def _drained(self, partition: int, offset: int) -> bool:
        """Whether Kafka holds no record of `partition` past `offset` (unknown: no): a quiet
        partition that still has records is behind (a worker slow or gone), not idle. (A topic
        written in transactions ends in a commit marker: its partitions never count as idle.)"""
        if self._consumer is None:
            return False
        try:
            # None on a timeout, whatever the stub says.
            ends: tuple[int, int] | None = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=2.0
            )
        except KafkaException as exc:
            log.debug("end offsets of %s[%d] unknown: %s", self.topic, partition, exc)
            return False
        if ends is None:
            return False
        low, high = ends
        return high <= max(offset + 1, low)

    def _record_history(self, records: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        """Append the committed windows and events to the capped lists the dashboard charts
        (`featurestore.drift.history`); best effort: the committed state does not depend on it."""
        namespace = self.settings.redis.namespace
        by_model: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_model.setdefault(record["model"], []).append(record)
        try:
            for model, mine in by_model.items():
                record_history(self.state.client, namespace, model, mine)
            record_alerts(self.state.client, namespace, events)
        except OnlineStoreError as exc:
            log.warning("drift history not appended (the dashboard misses it): %s", exc)
