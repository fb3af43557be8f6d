"""The whole path over encrypted, authenticated transport, with every certificate verified:
events produced to a SASL_SSL listener (SCRAM-SHA-512) -> the ingest worker -> tiles in a
TLS-only Redis logged into as an ACL user with a client certificate -> online reads (redis-py)
-> a model trained on the offline log -> /v1/features and /v1/predict (the asyncio pipe) and
the prediction log (a SASL_SSL producer). Then the same with one thing wrong — a password, the
CA — fails at once with a message that names the server and says what to check, and holds no
secret."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient

from featurestore import FeatureStore, Registry, load_repo
from featurestore.config import RedisSettings, Settings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.errors import RedisUnavailable
from featurestore.online import OnlineStore, read_views
from featurestore.redis_client import (
    PROBE,
    check_eviction_policy,
    make_client,
    make_pipe,
    redis_errors,
)
from featurestore.redis_pipe import pack
from featurestore.tiles import TileLayout
from serving import create_app
from streaming.errors import StreamingError
from streaming.ingest.worker import Worker
from streaming.topics import ensure_topic
from tests.security.conftest import (
    BROKER_PASSWORD,
    REDIS_PASSWORD,
    SASL_PASSWORD,
    WRONG_PASSWORD,
    SecureServices,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRETS = (BROKER_PASSWORD, SASL_PASSWORD, REDIS_PASSWORD, WRONG_PASSWORD)
REPO = """
from featurestore import Aggregation, Entity, FeatureView, KafkaSource

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(name="txns", topic="{topic}", timestamp_field="ts",
                   schema={{"user_id": "string", "amount": "float64"}})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
    aggregations=[Aggregation(function="count", windows=["2h"]),
                  Aggregation(column="amount", function="sum", windows=["2h"])])
"""
FEATURES = ["user_txn:count_2h", "user_txn:amount_sum_2h"]
USERS = [f"u{i}" for i in range(40)]


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a secret: {text[:3000]}"


def _ingest(settings: Settings, registry: Registry, count: int) -> None:
    """Run an ingest worker in a thread until it has consumed `count` events."""
    registered = registry.get_view("user_txn")
    worker = Worker(settings, [(registered.view, registered.version)], group="sec-ingest")
    deadline = time.monotonic() + 120
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(until=lambda w: w.counters.consumed >= count or time.monotonic() > deadline)
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="secure-ingest")
    thread.start()
    thread.join(180)
    assert not failure, failure
    assert worker.counters.consumed == count, worker.counters


def test_ingest_online_read_and_predict_over_verified_tls(
    secure: SecureServices, tmp_path: Path
) -> None:
    namespace = f"sec-{uuid.uuid4().hex[:8]}"
    topic, log_topic = f"txns-{namespace}", f"predictions-{namespace}"
    settings = secure.settings(tmp_path, namespace, prediction_log_topic=log_topic)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "features.py").write_text(REPO.format(topic=topic))
    registry = Registry(settings.registry)
    registry.apply(load_repo(tmp_path / "repo"))
    ensure_topic(settings.kafka, topic, partitions=2)
    ensure_topic(settings.kafka, log_topic)

    # Events 50 to 10 minutes old, produced over SASL_SSL.
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    events = [
        {
            "user_id": USERS[i % len(USERS)],
            "amount": round(float(rng.uniform(0, 100)), 2),
            "ts": (now - timedelta(seconds=int(rng.integers(600, 3000)))).isoformat(),
        }
        for i in range(400)
    ]
    events.sort(key=lambda event: event["ts"])  # in time order: none is late
    producer = Producer(settings.kafka.client_config(**{"enable.idempotence": True}))
    delivered: list[object] = []
    for event in events:
        producer.produce(
            topic,
            orjson.dumps(event),
            key=event["user_id"].encode(),
            on_delivery=lambda error, _m: delivered.append(error),
        )
    assert producer.flush(60) == 0
    assert delivered == [None] * len(events)
    del producer

    _ingest(settings, registry, len(events))

    # The brute-force answer: per user, how many events and their sum (all inside 2 h).
    count: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    for event in events:
        count[event["user_id"]] += 1
        total[event["user_id"]] += event["amount"]

    # Online reads through redis-py over TLS.
    store = FeatureStore(settings)
    online = store.get_online_features({"user_id": USERS}, features=FEATURES)
    assert online.features[FEATURES[0]].values == [count[u] for u in USERS]
    assert online.features[FEATURES[1]].values == pytest.approx([total[u] for u in USERS])

    # A model trained on what ingest wrote to the offline log.
    rows = [
        {
            "user_id": user,
            "event_timestamp": now - timedelta(minutes=5, seconds=7 * i),
            "is_big": int(total[user] > float(np.median(list(total.values())))),
        }
        for i, user in enumerate(USERS)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "labels.parquet")
    store.create_dataset("big_rows", tmp_path / "labels.parquet", features=FEATURES)
    version = store.train_model(
        "big_rows", "big", "is_big", {"num_iterations": 10, "num_leaves": 4, "min_data_in_leaf": 2},
        who="tests",
    )  # fmt: skip
    store.models.set_alias("big", "production", version.version, who="tests")
    booster = lgb.Booster(model_str=store.models.load_text(version))
    names = [spec.name for spec in version.signature.features]
    store.online.close()

    # Serving: /v1/features and /v1/predict read through the asyncio pipe over TLS; each
    # scored row goes to the prediction log through a SASL_SSL producer.
    with TestClient(create_app(settings)) as client:
        features = client.post(
            "/v1/features", json={"features": FEATURES, "entities": {"user_id": USERS}}
        )
        assert features.status_code == 200, features.text
        assert features.json()["features"][FEATURES[0]]["values"] == [count[u] for u in USERS]
        predicted = client.post(
            "/v1/predict/big",
            json={"entities": {"user_id": USERS[:5]}, "return_features": True},
        )
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    matrix = np.array([body["features"][name] for name in names], dtype=float).T
    assert body["scores"] == booster.predict(matrix).tolist()
    assert body["statuses"] == ["scored"] * 5

    logged = _read_topic(settings, log_topic, want=5)
    assert sorted(r["entities"]["user_id"] for r in logged) == sorted(USERS[:5])


def _read_topic(settings: Settings, topic: str, want: int) -> list[dict[str, object]]:
    consumer = Consumer(
        settings.kafka.client_config(
            **{"group.id": f"read-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([topic])
    records: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 60
        while len(records) < want and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=100, timeout=0.5):
                assert message.error() is None, message.error()
                records.append(orjson.loads(message.value()))
    finally:
        consumer.close()
    return records


@pytest.mark.parametrize("wrong", ["password", "certificate authority"])
def test_kafka_refuses_a_wrong_password_or_an_untrusted_certificate_clearly(
    secure: SecureServices, wrong: str
) -> None:
    kafka = (
        secure.kafka_settings(password=WRONG_PASSWORD)
        if wrong == "password"
        else secure.kafka_settings(ca=secure.certs.other_ca)
    )
    began = time.monotonic()
    with pytest.raises(StreamingError) as caught:
        ensure_topic(kafka, f"refused-{uuid.uuid4().hex[:8]}", timeout=30)
    text = str(caught.value)
    # At once (the first refusal), not after the 30 s timeout.
    assert time.monotonic() - began < 20, text
    assert f"Kafka at {secure.kafka.bootstrap} refused us" in text, text
    if wrong == "password":
        assert "SASL authentication" in text and "sasl.password" in text, text
    else:
        assert "certificate verify failed" in text and "ssl.ca.location" in text, text
    assert_no_secret(text, "the error")


@pytest.mark.parametrize("wrong", ["password", "certificate authority"])
def test_redis_refuses_a_wrong_password_or_an_untrusted_certificate_clearly(
    secure: SecureServices, tmp_path: Path, wrong: str
) -> None:
    if wrong == "password":
        url, said = secure.redis_url(password=WRONG_PASSWORD), "refused our login"
    else:
        url, said = secure.redis_url(ca=secure.certs.other_ca), "failed the TLS handshake"
    settings = secure.settings(tmp_path, "refused", prediction_log_topic="")
    settings = settings.model_copy(update={"redis": RedisSettings(url=url, namespace="x")})
    named = f"Redis at rediss://fstore-app:***@127.0.0.1:{secure.redis.config.redis_port}/0"
    Registry(settings.registry)  # an empty registry
    store = FeatureStore(settings)

    async def through_the_pipe() -> None:
        pipe = make_pipe(settings.redis, PROBE)
        try:
            with redis_errors(settings.redis, "pinging"):
                await pipe.execute(pack(b"PING"), 1)
        finally:
            pipe.close()

    # The blocking client (redis-py) and the asyncio pipe alike.
    for name, attempt in {
        "redis-py": lambda: store.online.positions("user_txn", 1),
        "the pipe": lambda: asyncio.run(through_the_pipe()),
    }.items():
        with pytest.raises(RedisUnavailable) as caught:
            attempt()
        text = str(caught.value)
        assert named in text and said in text, f"{name}: {text}"
        assert_no_secret("".join(traceback.format_exception(caught.value)), name)
    store.online.close()
    with TestClient(create_app(settings)) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503, answer.text
    assert named in answer.text and said in answer.text, answer.text
    assert_no_secret(answer.text, "/readyz")


def test_fstore_ingest_with_a_wrong_sasl_password_exits_saying_so(
    secure: SecureServices, tmp_path: Path
) -> None:
    settings = secure.settings(tmp_path, "cli", prediction_log_topic="")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "features.py").write_text(REPO.format(topic="txns-cli"))
    Registry(settings.registry).apply(load_repo(tmp_path / "repo"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    wrong = secure.kafka_settings(password=WRONG_PASSWORD)
    env.update(
        {
            "FSTORE_CONFIG": str(tmp_path / "none.yaml"),
            "FSTORE_KAFKA_BOOTSTRAP": wrong.bootstrap,
            "FSTORE_KAFKA_PROPERTIES": orjson.dumps(wrong.properties).decode(),
            "FSTORE_REDIS_URL": settings.redis.url,
            "FSTORE_REGISTRY_PATH": str(settings.registry.path),
            "FSTORE_OFFLINE_ROOT": str(settings.offline.root),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "COLUMNS": "300",
        }
    )
    (tmp_path / "none.yaml").write_text("{}\n")
    result = subprocess.run(
        [sys.executable, "-c", "from featurestore.cli import main; main()", "ingest"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    flat = " ".join(output.split())
    assert f"Kafka at {wrong.bootstrap} refused us" in flat, output
    assert "SASL authentication" in flat, output
    assert_no_secret(output, "fstore ingest")


def test_an_acl_user_without_config_is_warned_about_and_one_refused_a_read_is_told_so(
    secure: SecureServices, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL user may lack CONFIG (managed Redis): the eviction check warns and goes on. One
    that lacks a command the store needs gets a 503-kind error naming the server and NOPERM."""
    admin = make_client(RedisSettings(url=secure.redis_url()))
    name, password = f"limited-{uuid.uuid4().hex[:6]}", "limited-pw-T5"
    admin.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys=["*"],
        commands=["+@all", "-config", "-evalsha", "-eval"],
    )  # fmt: skip
    try:
        port = secure.redis.config.redis_port
        tls = {
            "ssl_certfile": str(secure.certs.client_cert),
            "ssl_keyfile": str(secure.certs.client_key),
        }
        limited = RedisSettings(
            url=secure.redis_security.url(port, name, password, tls=tls), namespace="lim"
        )
        assert check_eviction_policy(limited) is None
        assert "could not check that it evicts no keys" in caplog.text
        store = OnlineStore(limited)
        with pytest.raises(RedisUnavailable, match="refused a command to our ACL user") as caught:
            read_views(store, [("v", 1, _layout(), ["ann"])], 1_767_225_600_000_000)
        assert f"rediss://{name}:***@127.0.0.1:{port}/0" in str(caught.value)
        assert password not in str(caught.value)
        store.close()
    finally:
        admin.acl_deluser(name)


def _layout() -> TileLayout:
    view = FeatureView(
        name="v",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=KafkaSource(
            name="s", topic="t", timestamp_field="ts", schema={"user_id": "string", "x": "float64"}
        ),
        tile="1m",
        aggregations=[Aggregation(column="x", function="sum", windows=["10m"])],
    )
    return TileLayout(view)
