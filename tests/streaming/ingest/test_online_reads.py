"""`FeatureStore.get_online_features` over a registered repo, fed by the worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from featurestore import FeatureStore, Registry, RequestError, load_repo
from featurestore.config import RegistrySettings, Settings
from featurestore.errors import RegistryError
from streaming.ingest.worker import Worker
from tests.streaming.conftest import event_payload, publish

pytestmark = pytest.mark.integration

REPO = """
from featurestore import Aggregation, Entity, FeatureService, FeatureView, KafkaSource

user = Entity(name="user", join_keys=["user_id"])
card = Entity(name="card", join_keys=["user_id", "card"])
txns = KafkaSource(name="txns", topic="{topic}", timestamp_field="ts",
                   schema={{"user_id": "string", "card": "int64", "amount": "float64"}})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m", ttl="5m",
    aggregations=[Aggregation(function="count", windows=["10m"]),
                  Aggregation(column="amount", function="sum", windows=["10m", "1h"])])
card_txn = FeatureView(name="card_txn", entities=[card], source=txns, tile="1m",
    aggregations=[Aggregation(column="amount", function="max", windows=["1h"])])
fraud = FeatureService(name="fraud", features=["user_txn:amount_sum_10m", "card_txn:amount_max_1h"])
"""
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(
    settings: Settings, topic: str, tmp_path: Path, run_worker: Callable[..., Worker]
) -> FeatureStore:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "features.py").write_text(REPO.format(topic=topic))
    settings = settings.model_copy(update={"registry": RegistrySettings(path=tmp_path / "reg")})
    registry = Registry(settings.registry)
    registry.apply(load_repo(repo))
    events = [
        {"user_id": "ann", "card": 1, "amount": 10.0, "ts": T0.isoformat()},
        {
            "user_id": "ann",
            "card": 2,
            "amount": 30.0,
            "ts": (T0 + timedelta(minutes=3)).isoformat(),
        },
        {"user_id": "bob", "card": 1, "amount": 5.0, "ts": (T0 + timedelta(minutes=1)).isoformat()},
        {
            "user_id": "ann",
            "card": 1,
            "amount": 7.0,
            "ts": (T0 + timedelta(minutes=30)).isoformat(),
        },
    ]
    publish(settings.kafka, topic, [event_payload(e) for e in events])
    views = [(r.view, r.version) for r in registry.list_views()]
    worker = Worker(settings, views, group=f"{topic}.g")
    run_worker(worker, lambda w: w.counters.consumed >= len(events))
    deadline = time.monotonic() + 60
    while worker.counters.consumed < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    return FeatureStore(settings)


def test_service_read_with_composite_keys_statuses_and_timestamps(store: FeatureStore) -> None:
    as_of = T0 + timedelta(minutes=5)
    response = store.get_online_features(
        service="fraud", entities={"user_id": ["ann", "bob", "zed"], "card": [1, 1, 1]}, as_of=as_of
    )
    sums = response.features["user_txn:amount_sum_10m"]
    assert sums.values == [40.0, 5.0, 0.0]
    # zed has no event in the window: its sum reads 0, and its status says there was nothing.
    assert sums.statuses == ["ok", "ok", "missing"]
    assert sums.event_timestamps == [T0 + timedelta(minutes=3), T0 + timedelta(minutes=1), None]
    maxes = response.features["card_txn:amount_max_1h"]
    assert maxes.values == [10.0, 5.0, None]
    assert maxes.statuses == ["ok", "ok", "missing"]
    assert response.to_dict()["features"]["card_txn:amount_max_1h"]["event_timestamps"][0] == (
        T0.isoformat()
    )


def test_windows_slide_and_values_go_stale(store: FeatureStore) -> None:
    refs = ["user_txn:count_10m", "user_txn:amount_sum_1h"]
    later = store.get_online_features(
        features=refs, entities={"user_id": ["ann", "bob"]}, as_of=T0 + timedelta(minutes=20)
    )
    # The 10-minute window has passed every event; the 1-hour one still holds them, but the
    # newest is older than the view's 5-minute ttl.
    assert later.features["user_txn:count_10m"].values == [0.0, 0.0]
    assert later.features["user_txn:amount_sum_1h"].values == [40.0, 5.0]
    assert later.features["user_txn:amount_sum_1h"].statuses == ["stale", "stale"]
    fresh = store.get_online_features(
        features=refs, entities={"user_id": ["ann"]}, as_of=T0 + timedelta(minutes=31)
    )
    assert fresh.features["user_txn:amount_sum_1h"].values == [47.0]
    assert fresh.features["user_txn:amount_sum_1h"].statuses == ["ok"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ["user_txn:count_10m"], "entities": {"card": [1]}}, "entities lack"),
        (
            {"features": ["user_txn:count_10m"], "entities": {"user_id": ["a"], "card": []}},
            "differ in length",
        ),
        (
            {
                "features": ["user_txn:count_10m"],
                "entities": {"user_id": ["a"]},
                "as_of": datetime.fromisoformat("2026-05-01T00:00:00"),  # naive on purpose
            },
            "no timezone",
        ),
        ({"entities": {"user_id": ["a"]}}, "either features"),
        ({"features": [], "entities": {"user_id": ["a"]}}, "features is empty"),
    ],
)
def test_bad_requests_say_what_is_wrong(
    store: FeatureStore, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        store.get_online_features(**kwargs)  # type: ignore[arg-type]


def test_unknown_feature_is_named(store: FeatureStore) -> None:
    with pytest.raises(RegistryError, match="amount_sum_5m"):
        store.get_online_features(features=["user_txn:amount_sum_5m"], entities={"user_id": ["a"]})
