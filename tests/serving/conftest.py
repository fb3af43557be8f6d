"""A world to serve: a feature view whose events (wall-clock times, minutes old) went into the
offline log and Redis through `fstore import --online`, a dataset, two LightGBM versions of
model `fraud` trained on it with `train_model`, and production -> 1.

The world is built once per session; each test gets its own copy of the model registry (so
alias and traffic changes stay in the test), its own prediction-log topic, and an app.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient

from featurestore import FeatureStore, Registry, load_repo
from featurestore.config import (
    KafkaSettings,
    ModelsSettings,
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    ServingSettings,
    Settings,
)
from featurestore.services import free_port
from serving import create_app
from streaming.ingest.importer import import_events
from streaming.topics import ensure_topic
from tests.redis_faults import OwnRedis, copy_keys, own_redis
from tests.redis_target import client_of

REPO = """
from featurestore import Aggregation, Entity, FeatureView, KafkaSource

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(name="txns", topic="{topic}", timestamp_field="ts",
                   schema={{"user_id": "string", "amount": "float64"}})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
    aggregations=[Aggregation(function="count", windows=["2h"]),
                  Aggregation(column="amount", function="sum", windows=["2h"]),
                  Aggregation(column="amount", function="last", windows=["2h"]),
                  Aggregation(column="amount", function="max", windows=["10m"])])
"""
FEATURES = [
    "user_txn:count_2h",
    "user_txn:amount_sum_2h",
    "user_txn:amount_last_2h",
    "user_txn:amount_max_10m",
]
USERS = [f"u{i}" for i in range(100)]
ADMIN = "admin-secret"


@dataclass(frozen=True)
class World:
    root: Path
    settings: Settings
    refs: list[str]  # the models' pinned refs, in column order
    names: list[str]  # the models' feature names, in column order
    boosters: dict[int, lgb.Booster]  # version -> the registered model


@pytest.fixture(scope="session")
def world(
    kafka: KafkaSettings, redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("serving-world")
    namespace = f"test-serving-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=kafka,
        redis=RedisSettings(url=redis, namespace=namespace),
        offline=OfflineSettings(root=root / "offline"),
        registry=RegistrySettings(path=root / "registry"),
        models=ModelsSettings(path=root / "models"),
    )
    (root / "repo").mkdir()
    (root / "repo" / "features.py").write_text(REPO.format(topic=f"txns-{namespace}"))
    registry = Registry(settings.registry)
    registry.apply(load_repo(root / "repo"))

    # Events 50 to 14 minutes old: inside the 2-hour windows for the whole session, never in
    # the 10-minute one (so amount_max_10m is missing at serving time, for every user).
    rng = np.random.default_rng(11)
    now = datetime.now(UTC)
    events = []
    for i in range(600):
        when = now - timedelta(minutes=50) + timedelta(seconds=int(rng.integers(0, 36 * 60)))
        user = USERS[i % len(USERS)]
        events.append({"user_id": user, "amount": float(rng.uniform(0, 100)), "ts": when})
    pq.write_table(pa.Table.from_pylist(events), root / "events.parquet")
    report = import_events(
        settings, registry.get_view("user_txn"), root / "events.parquet", online=True
    )
    assert report.imported == len(events), report.rejected

    # Label rows: 1 when the user's last amount before the row is above 50 (5% flipped).
    rows = []
    for i in range(800):
        at = now - timedelta(minutes=45) + timedelta(seconds=int(rng.integers(0, 33 * 60)))
        user = USERS[i % len(USERS)]
        before = [e for e in events if e["user_id"] == user and e["ts"] < at]
        last = max(before, key=lambda e: e["ts"])["amount"] if before else 0.0
        label = int(last > 50) ^ int(rng.random() < 0.05)
        rows.append({"user_id": user, "event_timestamp": at, "is_fraud": label})
    pq.write_table(pa.Table.from_pylist(rows), root / "labels.parquet")

    store = FeatureStore(settings)
    store.create_dataset("fraud_rows", root / "labels.parquet", features=FEATURES)
    first = store.train_model(
        "fraud_rows", "fraud", "is_fraud", {"num_iterations": 15, "num_leaves": 4}, who="tests"
    )
    second = store.train_model(
        "fraud_rows", "fraud", "is_fraud", {"num_iterations": 60, "num_leaves": 8}, who="tests"
    )
    store.models.set_alias("fraud", "production", first.version, who="tests")
    boosters = {
        v.version: lgb.Booster(model_str=store.models.load_text(v)) for v in (first, second)
    }
    yield World(
        root,
        settings,
        [spec.ref for spec in first.signature.features],
        [spec.name for spec in first.signature.features],
        boosters,
    )
    client = client_of(redis)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def log_topic(kafka: KafkaSettings, topic_name: Callable[[str], str]) -> str:
    name = topic_name("predictions")
    ensure_topic(kafka, name, partitions=1)
    return name


@pytest.fixture
def serving_settings(world: World, tmp_path: Path, log_topic: str) -> Settings:
    """The world's settings with a registry copy of this test's own and a quick poller."""
    shutil.copytree(world.settings.models.path, tmp_path / "models")
    return world.settings.model_copy(
        update={
            "models": ModelsSettings(path=tmp_path / "models"),
            "serving": ServingSettings(
                prediction_log_topic=log_topic,
                admin_token=ADMIN,
                reload_interval_s=0.1,
                max_batch=1000,
            ),
        }
    )


def with_serving(settings: Settings, **changes: Any) -> Settings:
    """The settings with some `serving` keys changed (tokens, limits)."""
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=changes)})


def redis_down(settings: Settings) -> Settings:
    """The settings pointed at a port where no Redis listens."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    return settings.model_copy(update={"redis": RedisSettings(url=url, namespace="x")})


@pytest.fixture
def own_redis_world(
    world: World, serving_settings: Settings, tmp_path: Path
) -> Iterator[tuple[OwnRedis, Settings]]:
    """A redis-server of this test's own holding a copy of the world's keys (read from the
    shared server with DUMP), and the serving settings pointed at it: a server the test may
    stop, make a replica, fill up or keep busy. Its scripts answer BUSY after 100 ms."""
    with own_redis(tmp_path / "own-redis", "--busy-reply-threshold", "100") as server:
        namespace = world.settings.redis.namespace
        assert copy_keys(world.settings.redis.url, f"{namespace}:*", server) > 0
        redis = RedisSettings(url=server.url, namespace=namespace)
        yield server, serving_settings.model_copy(update={"redis": redis})


@pytest.fixture
def client(serving_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def admin_headers() -> dict[str, str]:
    """The deprecated admin token as a bearer: the audit's who is "serving.admin_token"."""
    return {"Authorization": f"Bearer {ADMIN}"}


Records = list[dict[str, Any]]


def read_log(kafka: KafkaSettings, topic: str, until: Callable[[Records], bool]) -> Records:
    """Records of the prediction log topic, read from its start until `until(records)` holds
    (or 60 s pass: then the caller's assertion shows what did arrive)."""
    consumer = Consumer(
        kafka.client_config(
            **{
                "group.id": f"test-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    records: Records = []
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while not until(records) and datetime.now(UTC) < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                records.append(orjson.loads(message.value()))
    finally:
        consumer.close()
    return records
