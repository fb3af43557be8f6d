"""Point-in-time training sets from the offline log equal the brute-force model."""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.config import OfflineSettings
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.errors import RequestError
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.registry import RegisteredView
from tests import reference
from tests.reference import Event

SECOND = 1_000_000
T0 = 1_767_225_600 * SECOND  # 2026-01-01T00:00:00Z
SOURCE = KafkaSource(
    name="txns",
    topic="txns",
    timestamp_field="ts",
    schema={"user_id": "string", "amount": "float64", "merchant": "string"},
)
FUNCTIONS = ["count", "sum", "mean", "min", "max", "variance", "stddev", "last", "first"]


def make_view(
    tile: str, windows: list[str], lateness: str = "30s", ttl: str | None = None
) -> FeatureView:
    aggregations = [Aggregation(function="count", windows=windows)]
    aggregations += [
        Aggregation(column="amount", function=f, windows=windows) for f in FUNCTIONS[1:]
    ]
    aggregations.append(
        Aggregation(column="merchant", function="approx_count_distinct", windows=windows)
    )
    return FeatureView(
        name="user_txn",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=SOURCE,
        tile=tile,
        allowed_lateness=lateness,
        ttl=ttl,
        aggregations=aggregations,
    )


def write_log(store: OfflineStore, events: list[Event], batches: list[int]) -> None:
    """Append events as the worker would, batch by batch (batch sizes from `batches`)."""
    start = 0
    for size in [*batches, len(events)]:
        chunk = events[start : start + max(size, 1)]
        start += len(chunk)
        if not chunk:
            break
        store.append("user_txn", 1, log_table(chunk))


def log_table(events: list[Event]) -> pa.Table:
    return pa.table(
        {
            "user_id": [e.values["user_id"] for e in events],
            "amount": [float(e.values["amount"]) for e in events],
            "merchant": [e.values["merchant"] for e in events],
            "event_timestamp": pa.array([e.ts for e in events], pa.timestamp("us", tz="UTC")),
            "_partition": pa.array([e.partition for e in events], pa.int32()),
            "_offset": pa.array([e.offset for e in events], pa.int64()),
        }
    )


def query(
    tmp: Path | OfflineSettings, view: FeatureView, rows: Any, **kwargs: Any
) -> HistoricalQuery:
    registered = RegisteredView(view, 1, view.fingerprint(), datetime.now(UTC))
    config = tmp if isinstance(tmp, OfflineSettings) else OfflineSettings(root=tmp)
    return HistoricalQuery(
        OfflineStore(config),
        rows,
        [(registered, name) for name in view.feature_names()],
        **kwargs,
    )


def assert_equal(feature: str, got: Any, want: Any) -> None:
    if "approx_count_distinct" in feature:
        # The HyperLogLog estimate (Redis's, reproduced offline) of a small exact count.
        assert abs(got - want) <= max(1, 0.05 * want), (feature, got, want)
    elif want is None:
        assert got is None, (feature, got)
    elif isinstance(want, float):
        assert got is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (
            feature,
            got,
            want,
        )
    else:
        assert got == want, (feature, got, want)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    tile_s = draw(st.sampled_from([1, 10, 60]))
    windows = sorted({draw(st.integers(1, 6)) for _ in range(3)})
    # Times on, next to and between tile boundaries, so edges are exercised.
    pool = sorted(
        {
            T0 + k * tile_s * SECOND + d
            for k in range(-2, 10)
            for d in (0, 1, -1, tile_s * SECOND // 2)
        }
    )
    n = draw(st.integers(0, 40))
    offsets = {0: 0, 1: 0}
    events = []
    for _ in range(n):
        partition = draw(st.integers(0, 1))
        events.append(
            Event(
                ts=draw(st.sampled_from(pool)),
                partition=partition,
                offset=offsets[partition],
                values={
                    "user_id": draw(st.sampled_from(["ann", "bob", "cy"])),
                    "amount": draw(
                        st.floats(-1e3, 1e3, allow_nan=False).map(lambda x: round(x, 3))
                    ),
                    "merchant": draw(st.sampled_from(["m1", "m2", "m3", "m4"])),
                },
            )
        )
        offsets[partition] += 1
    rows = [
        (draw(st.sampled_from(["ann", "bob", "cy", "dee"])), draw(st.sampled_from(pool)))
        for _ in range(draw(st.integers(1, 15)))
    ]
    # Other window kinds (docs/semantics.md), in whole tiles of this scenario's size.
    kinds = draw(
        st.lists(
            st.sampled_from(
                [
                    f"{2 * tile_s}s_offset_{tile_s}s",
                    f"{3 * tile_s}s_offset_{2 * tile_s}s",
                    f"{4 * tile_s}s_every_{2 * tile_s}s",
                    f"{2 * tile_s}s_tumbling",
                    f"{2 * tile_s}s_every_{tile_s}s_offset_{tile_s}s",
                    "lifetime",
                ]
            ),
            max_size=2,
            unique=True,
        )
    )
    return {
        "view": make_view(
            f"{tile_s}s",
            [f"{w * tile_s}s" for w in windows] + kinds,
            ttl=draw(st.sampled_from([None, f"{tile_s}s", f"{3 * tile_s}s"])),
        ),
        "events": events,
        "rows": rows,
        "batches": draw(st.lists(st.integers(1, 10), max_size=5)),
        "replayed": draw(st.booleans()),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_training_rows_equal_brute_force(
    tmp_path_factory: pytest.TempPathFactory, scenario: dict[str, Any]
) -> None:
    check_training_rows(OfflineSettings(root=tmp_path_factory.mktemp("log")), scenario)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_training_rows_equal_brute_force_with_the_log_on_s3(
    s3: Any, scenario: dict[str, Any]
) -> None:
    check_training_rows(s3.settings(), scenario)


def check_training_rows(config: OfflineSettings, scenario: dict[str, Any]) -> None:
    """The training rows of a scenario's log equal the brute-force reference's values."""
    view: FeatureView = scenario["view"]
    applied, _late = reference.apply_lateness(scenario["events"], view.lateness_us)
    store = OfflineStore(config)
    write_log(store, applied, scenario["batches"])
    if scenario["replayed"] and applied:
        # A crash after writing a batch and before the online commit writes it again.
        store.append("user_txn", 1, log_table(applied[: len(applied) // 2 + 1]))
    rows = pa.table(
        {
            "user_id": [user for user, _ in scenario["rows"]],
            "event_timestamp": pa.array(
                [t for _, t in scenario["rows"]], pa.timestamp("us", tz="UTC")
            ),
            "label": list(range(len(scenario["rows"]))),
        }
    )

    result = query(config, view, rows, statuses=True).to_arrow().to_pylist()

    # Row order and the carried label column are kept.
    assert [r["label"] for r in result] == list(range(len(scenario["rows"])))
    windows = {
        name: window
        for agg in view.aggregations
        for name, window in zip(agg.feature_names(), agg.windows, strict=True)
    }
    for (user, t), got in zip(scenario["rows"], result, strict=True):
        mine = [e for e in applied if e.values["user_id"] == user]
        want = reference.view_features(mine, view, t)
        for feature, value in want.items():
            assert_equal(feature, got[feature], value)
            newest = reference.newest_event(mine, windows[feature], view.tile_us, t)
            ttl = view.ttl_us
            stale = ttl is not None and newest is not None and newest < t - ttl
            status = "missing" if newest is None else "stale" if stale else "ok"
            assert got[f"{feature}__status"] == status, (feature, got, status)


def test_never_leaks_an_event_after_the_row_time(tmp_path: Path) -> None:
    view = make_view("60s", ["600s"])
    events = [
        Event(T0 + 10 * SECOND, 0, 0, {"user_id": "ann", "amount": 1.0, "merchant": "a"}),
        Event(T0 + 20 * SECOND, 0, 1, {"user_id": "ann", "amount": 100.0, "merchant": "b"}),
    ]
    OfflineStore(OfflineSettings(root=tmp_path)).append("user_txn", 1, log_table(events))
    rows = pa.table(
        {
            "user_id": ["ann", "ann"],
            "event_timestamp": pa.array(
                [T0 + 20 * SECOND - 1, T0 + 20 * SECOND], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    result = query(tmp_path, view, rows).to_arrow().to_pylist()
    assert [r["amount_sum_600s"] for r in result] == [1.0, 101.0]
    assert [r["amount_last_600s"] for r in result] == [1.0, 100.0]


def test_pandas_parquet_output_and_naive_times(tmp_path: Path) -> None:
    view = make_view("60s", ["600s"])
    events = [Event(T0 + SECOND, 0, 0, {"user_id": "ann", "amount": 2.5, "merchant": "a"})]
    OfflineStore(OfflineSettings(root=tmp_path / "log")).append("user_txn", 1, log_table(events))
    frame = pd.DataFrame(
        {
            "user_id": ["ann", "bob"],
            "event_timestamp": pd.to_datetime([T0 + 5 * SECOND] * 2, unit="us"),
            "y": [1, 0],
        }
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = query(tmp_path / "log", view, frame)
    assert any("read as UTC" in str(w.message) for w in caught)
    out = q.to_parquet(tmp_path / "out" / "train.parquet")
    table = pq.read_table(out)
    assert table.column("amount_sum_600s").to_pylist() == [2.5, 0.0]
    assert table.column("y").to_pylist() == [1, 0]

    # A Parquet file of entity rows works the same, in file order.
    pq.write_table(table.select(["user_id", "event_timestamp", "y"]), tmp_path / "rows.parquet")
    with pytest.warns(UserWarning, match="read as UTC"):
        again = query(tmp_path / "log", view, tmp_path / "rows.parquet").to_arrow()
    assert again.column("amount_sum_600s").to_pylist() == [2.5, 0.0]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            pa.table({"user_id": ["a"], "ts": pa.array([T0], pa.timestamp("us", tz="UTC"))}),
            "no timestamp column 'event_timestamp'",
        ),
        (
            pa.table(
                {"user_id": [1], "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC"))}
            ),
            "entity key 'user_id' is BIGINT",
        ),
        (
            pa.table(
                {"customer": ["a"], "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC"))}
            ),
            "lack 'user_id'",
        ),
        (pa.table({"user_id": ["a"], "event_timestamp": ["2026-01-01"]}), "must be a timestamp"),
    ],
)
def test_errors_users_meet(tmp_path: Path, rows: pa.Table, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        query(tmp_path, make_view("60s", ["600s"]), rows).to_arrow()
