"""`first` / `last` of a string column, `last_n` and `top_k` lists, on a real Redis and in DuckDB:
random out-of-order events (late ones, ties in time broken by (partition, offset), events on
tile edges, three partitions, any batch cuts) give online values equal to the training set's
and to the brute-force reference; numeric `first` rides along on the float path. A batch
applied again changes nothing, a wiped state is rebuilt from the log, and `verify_view`
reports 0 mismatches."""

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
from pydantic import ValidationError

from featurestore.config import OfflineSettings, RedisSettings, Settings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.events import EventBatch
from featurestore.keys import entity_key
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features, read_views
from featurestore.registry import RegisteredView
from featurestore.tiles import TileLayout
from featurestore.verify import verify_view
from featurestore.writer import ViewWriter
from tests.featurestore.test_writer import ENTITIES, EVENT, make_events
from tests.redis_target import client_of, delete_matching
from tests.reference import Event, apply_lateness, view_features

pytestmark = pytest.mark.integration

US = 1_000_000
MERCHANTS = ["m0", "m1", "", "café ☕", 'q"uote', "a:b{c}"]
VIEW = FeatureView(
    name="card_picks",
    entities=[Entity(name="card", join_keys=["user_id", "card"])],
    source=KafkaSource(
        name="txns",
        topic="unused",
        timestamp_field="ts",
        schema={
            "user_id": "string",
            "card": "string",
            "amount": "float64",
            "merchant": "string",
        },
    ),
    tile="1m",
    allowed_lateness="5m",
    aggregations=[
        Aggregation(column="merchant", function="last", windows=["10m", "2h"]),
        Aggregation(column="merchant", function="first", windows=["10m", "2h"]),
        Aggregation(column="amount", function="first", windows=["2h"]),
        Aggregation(function="count", windows=["2h"]),
        Aggregation(column="merchant", function="last_n", n=3, windows=["10m", "2h"]),
        Aggregation(column="amount", function="last_n", n=2, windows=["1h"]),
        Aggregation(column="merchant", function="top_k", k=2, windows=["10m", "2h"]),
    ],
)
LAYOUT = TileLayout(VIEW)
KEYS = [entity_key(e) for e in ENTITIES]
COLUMNS = ("user_id", "card", "amount", "merchant")


def with_merchants(events: list[Event], picks: list[int]) -> list[Event]:
    return [
        Event(e.ts, e.partition, e.offset, {**e.values, "merchant": MERCHANTS[m]})
        for e, m in zip(events, picks, strict=False)
    ]


def as_batch(events: list[Event]) -> EventBatch:
    return EventBatch(
        {name: [e.values[name] for e in events] for name in COLUMNS},
        np.array([e.ts for e in events], dtype=np.int64),
        np.array([e.partition for e in events], dtype=np.int64),
        np.array([e.offset for e in events], dtype=np.int64),
    )


def online_values(online: OnlineStore, at: int) -> list[dict[str, object]]:
    [rows] = read_features(online, [(VIEW.name, 1, LAYOUT, KEYS)], at)
    return [{name: value.value for name, value in row.items()} for row in rows]


def offline_values(offline: OfflineStore, at: int) -> list[dict[str, object]]:
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
    assert pa.types.is_string(table.schema.field("merchant_last_10m").type)
    assert pa.types.is_list(table.schema.field("merchant_last3_10m").type)
    return [{n: row[n] for n in names} for row in table.to_pylist()]


def reference_values(applied: list[Event], at: int) -> list[dict[str, object]]:
    out = []
    for entity in ENTITIES:
        mine = [e for e in applied if (e.values["user_id"], e.values["card"]) == entity]
        out.append(view_features(mine, VIEW, at))
    return out


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.lists(EVENT, min_size=1, max_size=120),
    picks=st.lists(st.integers(0, len(MERCHANTS) - 1), min_size=120, max_size=120),
    cuts=st.lists(st.integers(1, 40), max_size=5),
)
def test_string_first_last_online_equal_offline_and_reference(
    redis: str, spec: list[tuple[int, bool, int, int, float]], picks: list[int], cuts: list[int]
) -> None:
    events = with_merchants(make_events(spec), picks)
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
                want = reference_values(applied, t)
                assert first[t] == want
                assert offline_values(offline, t) == want

            again = ViewWriter(online, offline, VIEW, 1)
            again.load_positions()
            for batch in batches:
                assert again.apply(batch, batch.last_offsets()).applied == 0
            assert {t: online_values(online, t) for t in times} == first

            delete_matching(online.client, f"{namespace}:*")
            rebuilt = ViewWriter(online, offline, VIEW, 1)
            rebuilt.load_positions()
            assert rebuilt.rebuilds == 1
            assert {t: online_values(online, t) for t in times} == first
        finally:
            online.close()
            delete_matching(client_of(redis), f"{namespace}:*")


def test_arrays_carry_strings_beside_floats_and_verify_compares_them(redis: str) -> None:
    rng = np.random.default_rng(11)
    spec = [
        (
            int(rng.integers(-150, 150)),
            bool(rng.random() < 0.1),
            int(rng.integers(0, 3)),
            int(rng.integers(0, len(ENTITIES))),
            float(rng.integers(-400, 400)) / 4,
        )
        for _ in range(1_500)
    ]
    events = with_merchants(make_events(spec), rng.integers(0, len(MERCHANTS), len(spec)).tolist())
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
            for start in range(0, len(events), 400):
                batch = as_batch(events[start : start + 400])
                writer.apply(batch, batch.last_offsets())
            at = max(e.ts for e in events)
            [values] = read_views(online, [(VIEW.name, 1, LAYOUT, KEYS)], at)
            registered = RegisteredView(VIEW, 1, VIEW.fingerprint(), datetime.fromtimestamp(0, UTC))
            report = verify_view(config, registered)
        finally:
            online.close()
            delete_matching(client_of(redis), f"{namespace}:*")
    names = values.features
    text = names.index("merchant_last_2h")
    assert np.isnan(values.values[:, text]).all()  # the float array holds no strings
    assert all(isinstance(v, str) for v in values.column(text))
    assert all(isinstance(v, float) for v in values.column(names.index("amount_first_2h")))
    tops = values.column(names.index("merchant_top2_2h"))
    assert all(isinstance(v, list) and 1 <= len(v) <= 2 for v in tops)
    lists = values.column(names.index("merchant_last3_2h"))
    assert all(isinstance(v, list) and 1 <= len(v) <= 3 for v in lists)
    assert report.points > 0
    assert [c.examples for c in report.checks if c.mismatched] == []


def test_first_last_of_a_timestamp_column_is_refused_naming_the_feature() -> None:
    source = KafkaSource(
        name="s", topic="t", timestamp_field="ts", schema={"user": "string", "at": "timestamp"}
    )
    with pytest.raises(ValidationError) as error:
        FeatureView(
            name="v",
            entities=[Entity(name="user")],
            source=source,
            aggregations=[Aggregation(column="at", function="first", windows=["1h"])],
        )
    assert "at_first_1h" in str(error.value) and "string column" in str(error.value)


def test_top_k_needs_k_and_a_string_column() -> None:
    with pytest.raises(ValidationError, match="needs k, how many most frequent values"):
        Aggregation(column="merchant", function="top_k", windows=["1h"])
    with pytest.raises(ValidationError) as error:
        FeatureView(
            name="v",
            entities=VIEW.entities,
            source=VIEW.source,
            aggregations=[Aggregation(column="amount", function="top_k", k=3, windows=["1h"])],
        )
    assert "amount_top3_1h" in str(error.value) and "takes a string column" in str(error.value)


def test_last_n_needs_n_and_names_its_features() -> None:
    with pytest.raises(ValidationError, match="needs n, how many newest values to keep: n=5"):
        Aggregation(column="merchant", function="last_n", windows=["1h"])
    with pytest.raises(ValidationError, match="n belongs to last_n; remove it"):
        Aggregation(column="merchant", function="last", windows=["1h"], n=3)
    agg = Aggregation(column="merchant", function="last_n", windows=["1h", "1d"], n=5)
    assert agg.feature_names() == ["merchant_last5_1h", "merchant_last5_1d"]
