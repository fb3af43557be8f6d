"""Prometheus metrics of an ingest worker, read from its counters at scrape time.

Nothing is updated per event: a scrape reads `Worker.counters` and the consumer lag that
librdkafka reports in its statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from featurestore.offline import quarantined_total
from streaming.metrics import consumer_lag_gauge, outbox_metrics

__all__ = ["WorkerCollector"]

if TYPE_CHECKING:
    from streaming.ingest.worker import Worker


class WorkerCollector(Collector):
    """The worker's counters and consumer lag, as Prometheus metric families."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = self.worker.counters
        events = CounterMetricFamily(
            "fstore_ingest_events", "Events consumed, by outcome", labels=["outcome"]
        )
        events.add_metric(["consumed"], counters.consumed)
        events.add_metric(["applied"], counters.applied)
        events.add_metric(["late"], counters.late)
        events.add_metric(["dead_letter"], counters.dead_lettered)
        yield events
        yield CounterMetricFamily("fstore_ingest_batches", "Batches processed", counters.batches)
        yield CounterMetricFamily(
            "fstore_ingest_batch_seconds", "Time spent processing batches", counters.batch_seconds
        )
        yield CounterMetricFamily(
            "fstore_ingest_conflicts",
            "Batches redone after a position conflict",
            counters.conflicts,
        )
        yield CounterMetricFamily(
            "fstore_ingest_state_rebuilds",
            "View states Redis had lost, found and rebuilt from the offline log",
            counters.state_rebuilds,
        )
        yield CounterMetricFamily(
            "fstore_ingest_log_files_compacted",
            "Small offline-log files merged into bigger ones (dates before today)",
            counters.log_files_compacted,
        )
        yield CounterMetricFamily(
            "fstore_offline_quarantined_files",
            "Unreadable offline-log files moved to the quarantine folder (queries go on without)",
            quarantined_total(),
        )
        yield from outbox_metrics(
            "fstore_ingest_dead_letters", "Dead letters", self.worker.loop.outbox
        )
        yield consumer_lag_gauge("fstore_ingest_consumer_lag", self.worker.lag)
        yield self._watermarks()

    def _watermarks(self) -> GaugeMetricFamily:
        """Per view version, the newest event time applied (its watermark): the features'
        freshness is `time() - fstore_ingest_watermark_seconds`."""
        gauge = GaugeMetricFamily(
            "fstore_ingest_watermark_seconds",
            "Newest event time applied to the view version (Unix seconds), over the partitions "
            "this worker knows; freshness is time() minus this",
            labels=["view", "version"],
        )
        for writers in self.worker.views.values():
            for writer in writers:
                # list(): one step under the GIL while the worker's thread replaces positions
                marks = [p.watermark for p in list(writer.positions.values()) if p.offset >= 0]
                if marks:
                    labels = [writer.view.name, str(writer.version)]
                    gauge.add_metric(labels, max(marks) / 1_000_000)
        return gauge
