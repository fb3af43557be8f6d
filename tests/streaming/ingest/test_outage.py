"""Redis going away mid-stream: the worker retries, loses nothing, and resumes."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import redis as redis_lib

from featurestore.config import RedisSettings, ServicesSettings, Settings
from featurestore.services import RedisServer, free_port
from streaming.ingest.worker import Worker
from tests.streaming.conftest import (
    US,
    Published,
    assert_matches_reference,
    event_payload,
    make_view,
    publish,
    random_events,
)

pytestmark = pytest.mark.integration


def test_worker_survives_a_redis_restart(
    settings: Settings, topic: str, tmp_path: Path, run_worker: Callable[..., Worker]
) -> None:
    server = RedisServer(
        ServicesSettings(state_dir=tmp_path / "redis", cache_dir=tmp_path, redis_port=free_port())
    )
    server.start()
    try:
        settings = settings.model_copy(update={"redis": RedisSettings(url=server.url)})
        events = random_events(random.Random(3), 6_000, users=20)
        view = make_view(topic)
        worker = Worker(settings, [(view, 1)], group=f"{topic}.g", batch_size=300)
        run_worker(worker, lambda w: w.counters.consumed >= len(events))

        where = publish(settings.kafka, topic, [event_payload(e) for e in events[:3000]])
        deadline = time.monotonic() + 30
        while worker.counters.consumed < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        # A real outage: the server goes away (saving its data, as a persistent Redis would) ...
        redis_lib.Redis.from_url(server.url).shutdown(save=True)
        where += publish(settings.kafka, topic, [event_payload(e) for e in events[3000:]])
        time.sleep(2)
        during = worker.counters.consumed
        # ... and comes back.
        server.start()
        deadline = time.monotonic() + 60
        while worker.counters.consumed < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)

        assert during < len(events), "the worker should have been held up by the outage"
        assert worker.counters.consumed == len(events)
        published = [
            Published(int(datetime.fromisoformat(str(e["ts"])).timestamp() * US), p, o, e)
            for e, (p, o) in zip(events, where, strict=True)
        ]
        newest = max(e.ts for e in published)
        assert assert_matches_reference(settings, view, published, newest) > 100
    finally:
        server.stop()
