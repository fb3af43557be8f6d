"""The worker's Prometheus endpoint reports its counters and lag."""

from __future__ import annotations

import urllib.request

import pytest

from featurestore.config import Settings
from featurestore.positions import NO_POSITION, Position
from featurestore.services import free_port
from streaming.ingest.metrics import WorkerCollector
from streaming.ingest.worker import Worker
from streaming.metrics import serve_metrics
from tests.streaming.conftest import make_view

pytestmark = pytest.mark.integration


def test_metrics_endpoint_reads_the_worker_counters(settings: Settings, topic: str) -> None:
    worker = Worker(settings, [(make_view(topic), 1)])
    worker.counters.consumed, worker.counters.applied, worker.counters.late = 12, 9, 2
    worker.counters.dead_lettered = 3
    worker.lag[(topic, 0)] = 41
    port = free_port()
    serve_metrics(WorkerCollector(worker), port)

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310

    assert 'fstore_ingest_events_total{outcome="applied"} 9.0' in text
    assert 'fstore_ingest_events_total{outcome="late"} 2.0' in text
    assert 'fstore_ingest_events_total{outcome="dead_letter"} 3.0' in text
    assert f'fstore_ingest_consumer_lag{{partition="0",topic="{topic}"}} 41.0' in text
    assert "fstore_ingest_watermark_seconds{" not in text  # nothing applied: no freshness yet


def test_the_watermark_gauge_is_the_newest_applied_event_time(
    settings: Settings, topic: str
) -> None:
    """Freshness on a dashboard is `time() - fstore_ingest_watermark_seconds`."""
    worker = Worker(settings, [(make_view(topic), 3)])
    (writer,) = worker.views[topic]
    writer.positions = {
        0: Position(10, 1_700_000_000_250_000),
        1: Position(4, 1_700_000_100_500_000),
        2: Position(-1, NO_POSITION.watermark),  # nothing applied on it
    }
    (family,) = [
        f for f in WorkerCollector(worker).collect() if f.name.endswith("watermark_seconds")
    ]
    (sample,) = family.samples
    assert sample.labels == {"view": writer.view.name, "version": "3"}
    assert sample.value == 1_700_000_100.5
