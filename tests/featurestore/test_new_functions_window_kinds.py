"""The functions kept beside the tile states (percentiles, `first` / `last` of a string column,
`last_n`, `top_k`) over every window kind (sliding, offset, hopping, tumbling, lifetime):
random out-of-order events with late ones go through the real writer into a real Redis and
offline log; online reads, training rows (values and statuses) and `verify` must equal
tests/reference.py, and a percentile must be the same number online and offline.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.config import OfflineSettings, RedisSettings, Settings
from featurestore.definitions import Aggregation, Entity, FeatureView
from featurestore.keys import entity_key
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.registry import RegisteredView
from featurestore.tiles import TileLayout
from featurestore.verify import verify_view
from featurestore.windows import tile_window
from featurestore.writer import ViewWriter
from tests import reference
from tests.featurestore.test_window_kinds import (
    KINDS,
    MINUTE,
    SOURCE,
    T0,
    USERS,
    as_batch,
)
from tests.redis_target import client_of, delete_matching
from tests.reference import Event

pytestmark = pytest.mark.integration

ALPHA = 0.01


def make_view(windows: list[str]) -> FeatureView:
    aggregations = [
        Aggregation(
            column="amount", function="approx_percentile", windows=windows, percentiles=[0.5, 0.9]
        ),
        Aggregation(column="amount", function="first", windows=windows),
        Aggregation(column="merchant", function="first", windows=windows),
        Aggregation(column="merchant", function="last", windows=windows),
        Aggregation(column="merchant", function="last_n", windows=windows, n=3),
        Aggregation(column="merchant", function="top_k", windows=windows, k=2),
    ]
    return FeatureView(
        name="beside",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=SOURCE,
        tile="1m",
        allowed_lateness="2m",
        ttl="3m",
        aggregations=aggregations,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    windows = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique=True))
    pool = [T0 + k * MINUTE + d for k in range(0, 16) for d in (0, 1, -1, MINUTE // 2)]
    offsets = {0: 0, 1: 0}
    events = []
    for _ in range(draw(st.integers(0, 30))):
        partition = draw(st.integers(0, 1))
        events.append(
            Event(
                ts=draw(st.sampled_from(pool)),  # in any order: out of order, some late
                partition=partition,
                offset=offsets[partition],
                values={
                    "user_id": draw(st.sampled_from(USERS)),
                    "amount": float(draw(st.integers(-50, 50))),
                    "merchant": draw(st.sampled_from(["m1", "m2", "m3", "m4"])),
                },
            )
        )
        offsets[partition] += 1
    reads = draw(st.lists(st.sampled_from(pool + [T0 + 20 * MINUTE]), min_size=1, max_size=5))
    return {
        "view": make_view(windows),
        "events": events,
        "batches": draw(st.integers(1, 3)),
        "reads": reads,
    }


def windows_of(view: FeatureView) -> dict[str, str]:
    return {name: w for a in view.aggregations for name, w, _q in a.feature_specs()}


def online_exact(view: FeatureView, feature: str, mine: list[Event], t: int) -> bool:
    """As in test_window_kinds: a window ending at t's tile is exact online unless an event
    after t is in t's own tile (sliding) or anywhere (lifetime)."""
    spec = tile_window(windows_of(view)[feature], view.tile_us)
    if not spec.cuts_at_read_time:
        return True
    if spec.is_lifetime:
        return all(e.ts <= t for e in mine)
    return all(e.ts <= t or e.ts // MINUTE != t // MINUTE for e in mine)


def matches(name: str, got: Any, want: Any) -> bool:
    """A percentile within the sketch's guarantee of the exact order statistic; the rest
    equal."""
    if "_p50_" in name or "_p90_" in name:
        return reference.percentile_matches(got, want, ALPHA)
    if isinstance(got, float) and isinstance(want, float):
        return abs(got - want) <= 1e-9 * max(1.0, abs(want))
    return bool(got == want)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_functions_beside_the_tiles_equal_the_reference_over_every_window_kind(
    redis: str, scenario: dict[str, Any]
) -> None:
    view: FeatureView = scenario["view"]
    layout = TileLayout(view)
    events: list[Event] = scenario["events"]
    applied, late = reference.apply_lateness(events, view.lateness_us)
    namespace = f"test:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as root:
        settings_ = Settings(
            redis=RedisSettings(url=redis, namespace=namespace),
            offline=OfflineSettings(root=Path(root)),
        )
        offline = OfflineStore(settings_.offline)
        online = OnlineStore(settings_.redis)
        try:
            writer = ViewWriter(online, offline, view, 1)
            writer.load_positions()
            late_seen = 0
            for chunk in np.array_split(np.arange(len(events)), scenario["batches"]):
                if len(chunk):
                    batch = as_batch([events[i] for i in chunk])
                    late_seen += len(writer.apply(batch, batch.last_offsets()).late)
            assert late_seen == len(late)

            keys = [entity_key([u]) for u in USERS]
            registered = RegisteredView(view, 1, view.fingerprint(), datetime.now(UTC))
            reads = sorted(set(scenario["reads"]))
            online_rows = {
                t: read_features(online, [(view.name, 1, layout, keys)], t)[0] for t in reads
            }
            rows = pa.table(
                {
                    "user_id": [u for t in reads for u in USERS],
                    "event_timestamp": pa.array(
                        [t for t in reads for _ in USERS], pa.timestamp("us", tz="UTC")
                    ),
                }
            )
            names = view.feature_names()
            offline_rows = (
                HistoricalQuery(offline, rows, [(registered, f) for f in names], statuses=True)
                .to_arrow()
                .to_pylist()
            )
            report = verify_view(settings_, registered, sample=5) if applied else None
        finally:
            online.close()
            delete_matching(client_of(redis), f"{namespace}:*")

    windows = windows_of(view)
    got_offline = iter(offline_rows)
    for t in reads:
        for u, user in enumerate(USERS):
            mine = [e for e in applied if e.values["user_id"] == user]
            want = reference.view_features(mine, view, t)
            row = next(got_offline)
            for name in names:
                where = f"{name} of {user} at minute {(t - T0) / MINUTE}"
                assert matches(name, row[name], want[name]), (where, "offline", row[name], want)
                newest = reference.newest_event(mine, windows[name], view.tile_us, t)
                stale = newest is not None and view.ttl_us is not None and newest < t - view.ttl_us
                status = "missing" if newest is None else "stale" if stale else "ok"
                assert row[f"{name}__status"] == status, (where, row[f"{name}__status"], status)
                if online_exact(view, name, mine, t):
                    value = online_rows[t][u][name]
                    assert value.status == status, (where, value.status, status)
                    if "_p50_" in name or "_p90_" in name:  # one sketch: the same number
                        assert value.value == row[name], (where, value.value, row[name])
                    else:
                        assert matches(name, value.value, want[name]), (where, value, want)
    if report is not None:
        assert [c.feature for c in report.checks if c.mismatched] == [], report.checks
