"""`approx_percentile` on a real Redis and in DuckDB: random out-of-order events (late ones
too, zeros, negatives, events on tile edges, three partitions, any batch cuts) give online
values equal to the training set's, bit for bit, and both fit the brute-force order statistic
within the sketch's relative accuracy. A batch applied again changes nothing (the sketch counts
move in the merge script, with the positions), a wiped state is rebuilt from the log with its
sketches, and `verify_view` reports 0 mismatches.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.config import OfflineSettings, RedisSettings, Settings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.keys import entity_key
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.percentiles import bucket_keys, bucket_value
from featurestore.registry import RegisteredView
from featurestore.tiles import TileLayout
from featurestore.verify import verify_view
from featurestore.writer import ViewWriter
from tests.featurestore.test_writer import ENTITIES, EVENT, as_batch, make_events
from tests.redis_target import client_of, delete_matching
from tests.reference import Event, apply_lateness, percentile_matches, view_features

pytestmark = pytest.mark.integration

US = 1_000_000
VIEW = FeatureView(
    name="card_pct",
    entities=[Entity(name="card", join_keys=["user_id", "card"])],
    source=KafkaSource(
        name="txns",
        topic="unused",
        timestamp_field="ts",
        schema={"user_id": "string", "card": "string", "amount": "float64"},
    ),
    tile="1m",
    allowed_lateness="5m",
    aggregations=[
        Aggregation(function="count", windows=["10m", "2h"]),
        Aggregation(
            column="amount",
            function="approx_percentile",
            windows=["10m", "2h"],
            percentiles=[0.0, 0.5, 0.9, 0.99, 1.0],
        ),
        Aggregation(
            column="amount",
            function="approx_percentile",
            name="amount_coarse",
            windows=["1h"],
            percentiles=[0.25, 0.75],
            relative_accuracy=0.05,
        ),
    ],
)
LAYOUT = TileLayout(VIEW)
KEYS = [entity_key(e) for e in ENTITIES]
ACCURACY = {f.name: f.accuracy for f in LAYOUT.features if f.accuracy is not None}


def online_values(online: OnlineStore, at: int) -> list[dict[str, float | None]]:
    [rows] = read_features(online, [(VIEW.name, 1, LAYOUT, KEYS)], at)
    return [{name: value.value for name, value in row.items()} for row in rows]


def offline_values(offline: OfflineStore, at: int) -> list[dict[str, float | None]]:
    registered = RegisteredView(VIEW, 1, VIEW.fingerprint(), datetime.fromtimestamp(0, UTC))
    rows = pa.table(
        {
            "user_id": [e[0] for e in ENTITIES],
            "card": [e[1] for e in ENTITIES],
            "event_timestamp": pa.array([at] * len(ENTITIES), pa.timestamp("us", tz="UTC")),
        }
    )
    names = VIEW.feature_names()
    table = HistoricalQuery(offline, rows, [(registered, n) for n in names]).to_arrow()
    return [{n: row[n] for n in names} for row in table.to_pylist()]


def assert_fits_reference(
    got: list[dict[str, float | None]], applied: list[Event], at: int
) -> None:
    for entity, values in zip(ENTITIES, got, strict=True):
        mine = [e for e in applied if (e.values["user_id"], e.values["card"]) == entity]
        for name, exact in view_features(mine, VIEW, at).items():
            if name not in ACCURACY:
                assert values[name] == exact, (entity, name)
                continue
            alpha = ACCURACY[name]
            assert percentile_matches(values[name], exact, alpha), (entity, name, exact)
            if exact is not None:  # the bucket of the exact order statistic, exactly
                bucket = bucket_value(bucket_keys(np.array([exact]), alpha), alpha)[0]
                assert values[name] == bucket, (entity, name, exact)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.lists(EVENT, min_size=1, max_size=120),
    cuts=st.lists(st.integers(1, 40), max_size=5),
)
def test_percentiles_online_equal_offline_and_reference(
    redis: str, spec: list[tuple[int, bool, int, int, float]], cuts: list[int]
) -> None:
    events = make_events(spec)
    applied, _late = apply_lateness(events, VIEW.lateness_us)
    bounds = [0, *np.cumsum(cuts).tolist(), len(events)]
    batches = [as_batch(events[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    newest = max(e.ts for e in events)
    times = [newest, newest + 7 * 60 * US, newest + 61 * 60 * US, newest + 3 * 3_600 * US]
    namespace = f"test:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as root:
        offline = OfflineStore(OfflineSettings(root=Path(root)))
        online = OnlineStore(RedisSettings(url=redis, namespace=namespace))
        try:
            writer = ViewWriter(online, offline, VIEW, 1)
            writer.load_positions()
            for batch in batches:
                writer.apply(batch, batch.last_offsets())
            first = {t: online_values(online, t) for t in times}
            for t in times:
                assert first[t] == offline_values(offline, t)  # equal, no tolerance
                assert_fits_reference(first[t], applied, t)

            # Replayed (a restart from older Kafka offsets): the sketches do not count twice.
            again = ViewWriter(online, offline, VIEW, 1)
            again.load_positions()
            for batch in batches:
                assert again.apply(batch, batch.last_offsets()).applied == 0
            assert {t: online_values(online, t) for t in times} == first

            # Redis comes back empty: the rebuild from the log brings the sketches back.
            delete_matching(online.client, f"{namespace}:*")
            rebuilt = ViewWriter(online, offline, VIEW, 1)
            rebuilt.load_positions()
            assert rebuilt.rebuilds == 1
            assert {t: online_values(online, t) for t in times} == first
        finally:
            online.close()
            delete_matching(client_of(redis), f"{namespace}:*")


def test_verify_reports_no_percentile_mismatch(redis: str) -> None:
    rng = np.random.default_rng(7)
    spec = [
        (
            int(rng.integers(-150, 150)),
            bool(rng.random() < 0.1),
            int(rng.integers(0, 3)),
            int(rng.integers(0, len(ENTITIES))),
            float(rng.lognormal(3, 1.5)) * (1 if rng.random() < 0.9 else -1),
        )
        for _ in range(3_000)
    ]
    events = make_events(spec)
    namespace = f"test:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as root:
        config = Settings(
            redis=RedisSettings(url=redis, namespace=namespace),
            offline=OfflineSettings(root=Path(root)),
        )
        online = OnlineStore(config.redis)
        try:
            writer = ViewWriter(online, OfflineStore(config.offline), VIEW, 1)
            writer.load_positions()
            for start in range(0, len(events), 500):
                batch = as_batch(events[start : start + 500])
                writer.apply(batch, batch.last_offsets())
            registered = RegisteredView(VIEW, 1, VIEW.fingerprint(), datetime.fromtimestamp(0, UTC))
            report = verify_view(config, registered)
        finally:
            online.close()
            delete_matching(client_of(redis), f"{namespace}:*")
    assert report.points > 0
    percentiles = [c for c in report.checks if c.feature in ACCURACY]
    assert percentiles and all(c.compared == report.points for c in percentiles)
    assert [c.examples for c in report.checks if c.mismatched] == []
