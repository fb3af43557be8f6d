"""The worker's Prometheus endpoint reports its counters and lag."""

from __future__ import annotations

import urllib.request

import pytest

from featurestore.config import Settings
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
