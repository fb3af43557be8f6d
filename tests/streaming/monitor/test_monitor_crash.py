"""`fstore monitor` killed with SIGKILL again and again mid-stream counts every prediction once.

The monitor claims that one atomic Redis call merges a batch's window accumulators and moves
its positions (streaming/monitor_state.py), so a restart resumes from the stored positions and
replays at most the batch in flight, which the position check then applies once. Here the real
command runs as a subprocess, is killed at random moments while a publisher streams 40 windows
of 1,500 predictions, and is restarted each time; afterwards every drift record of every
window must hold exactly 1,500 rows, and its statistics those of the published values.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featurestore.config import Settings
from tests.redis_target import client_of
from tests.streaming.monitor.test_monitor import (
    PARTITIONS,
    T0,
    US,
    WINDOW_US,
    assert_drift_records,
    flush_window,
    monitor_settings,
    publish,
    register_model,
    window_records,
)

pytestmark = pytest.mark.integration

FSTORE = Path(sys.executable).with_name("fstore")
WINDOWS = 40
PER_WINDOW = 1_500
MIN_KILLS = 5


class Publisher(threading.Thread):
    def __init__(self, publish_chunk: Callable[[list[dict[str, Any]]], None], records: list[Any]):
        super().__init__(daemon=True)
        self.publish_chunk, self.records = publish_chunk, records
        self.delivered = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self.records), 1_500):
                chunk = self.records[start : start + 1_500]
                self.publish_chunk(chunk)
                self.delivered += len(chunk)
                time.sleep(0.5)
        except BaseException as exc:  # re-raised in the test's thread
            self.error = exc


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_monitor_killed_mid_stream_counts_every_prediction_once(
    settings: Settings,
    tmp_path: Path,
    topic_name: Callable[[str], str],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    config = monitor_settings(settings, tmp_path, topic_name)
    model = register_model(config.models)
    topic = config.serving.prediction_log_topic
    group = topic_name("monitor")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env.update(
        FSTORE_KAFKA_BOOTSTRAP=config.kafka.bootstrap,
        FSTORE_REDIS_URL=config.redis.url,
        FSTORE_REDIS_NAMESPACE=config.redis.namespace,
        FSTORE_REDIS_CLUSTER=str(config.redis.cluster).lower(),
        FSTORE_MODELS_PATH=str(config.models.path),
        FSTORE_SERVING_PREDICTION_LOG_TOPIC=topic,
        FSTORE_MONITOR_DRIFT_TOPIC=config.monitor.drift_topic,
        FSTORE_MONITOR_ALERTS_TOPIC=config.monitor.alerts_topic,
        FSTORE_MONITOR_LABELS_TOPIC="",
        FSTORE_MONITOR_WINDOW="10s",
        FSTORE_MONITOR_ALLOWED_LATENESS="1s",
        FSTORE_MONITOR_SLIDING_WINDOWS="3",
    )
    args = ["monitor", "--group", group, "--batch-size", "200", "--instance-id", f"{group}.0"]
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(life: int) -> subprocess.Popen[bytes]:
        with (logs / f"monitor-{life}.log").open("wb") as out:
            process = subprocess.Popen(
                [str(FSTORE), *args], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
            )
        processes.append(process)
        return process

    client = client_of(config.redis.url)
    state = f"{config.redis.namespace}:{{drift}}:monitor:{group}:state"

    def counted() -> int:
        """Offsets the stored positions cover: predictions the monitor has merged."""
        raw = client.hgetall(state)
        return sum(
            int(value.split(b":")[0]) + 1
            for key, value in raw.items()
            if key.startswith(f"pos:{topic}:".encode())
        )

    rng = random.Random(20260301)
    np_rng = np.random.default_rng(3)
    records = [r for w in range(WINDOWS) for r in window_records(model, np_rng, w, PER_WINDOW)]
    publisher = Publisher(lambda chunk: publish(config.kafka, topic, chunk), records)
    publisher.start()
    life = 0
    monitor = start(life)
    kills = kills_while_counting = 0
    while publisher.is_alive() or kills < MIN_KILLS:
        # Most kills land amid batches: once this life has counted some, at a random moment.
        # The rest land wherever the wait ended: in start-up, joining the group, idling.
        at_start = counted()
        deadline = time.monotonic() + rng.uniform(0.5, 10)
        while counted() == at_start and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.1))
        kills_while_counting += at_start < counted() < publisher.delivered
        assert monitor.poll() is None, (logs / f"monitor-{life}.log").read_text()[-3000:]
        monitor.send_signal(signal.SIGKILL)
        monitor.wait(30)
        kills += 1
        life += 1
        monitor = start(life)
    publisher.join(60)
    assert publisher.error is None and publisher.delivered == len(records)
    end = T0 + WINDOWS * WINDOW_US
    publish(config.kafka, topic, flush_window(model, end + 2 * US))

    deadline = time.monotonic() + 180
    while int(client.hget(state, "closed") or 0) < end:
        assert time.monotonic() < deadline, (logs / f"monitor-{life}.log").read_text()[-3000:]
        assert monitor.poll() is None, (logs / f"monitor-{life}.log").read_text()[-3000:]
        time.sleep(0.2)
    monitor.send_signal(signal.SIGTERM)
    assert monitor.wait(30) == 0, (logs / f"monitor-{life}.log").read_text()[-3000:]
    assert counted() == len(records) + PARTITIONS
    assert kills_while_counting >= MIN_KILLS, f"{kills_while_counting} kills while counting"

    assert_drift_records(config, model, records, WINDOWS, PER_WINDOW)
    print(f"\n{kills} kills ({kills_while_counting} while counting), {len(records):,} predictions")
