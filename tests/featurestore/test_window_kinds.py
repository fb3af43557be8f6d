"""Window kinds (offset, hopping, tumbling, lifetime) online and offline against the brute-force
reference: random out-of-order events with late ones go through the real writer into a real
Redis and offline log; online reads, training rows (values and statuses) and `verify` must all
equal tests/reference.py, which takes each window's events by the formula of docs/semantics.md.
"""

from __future__ import annotations

import math
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
from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.events import EventBatch
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
from tests.redis_target import client_of, delete_matching
from tests.reference import Event

pytestmark = pytest.mark.integration

MINUTE = 60_000_000
T0 = 1_767_225_600_000_000 + 50 * MINUTE  # 00:50: windows straddle a bucket boundary (60 tiles)
USERS = ("ann", "bob")
FUNCTIONS = ("sum", "mean", "min", "max", "stddev", "last")
KINDS = (
    "2m",
    "5m",
    "3m_offset_1m",
    "2m_offset_2m",
    "4m_every_2m",
    "2m_tumbling",
    "3m_tumbling",
    "1m_every_1m",
    "6m_every_2m_offset_1m",
    "lifetime",
)
SOURCE = KafkaSource(
    name="s",
    topic="unused",
    timestamp_field="ts",
    schema={"user_id": "string", "merchant": "string", "amount": "float64"},
)


def make_view(windows: list[str]) -> FeatureView:
    aggregations = [Aggregation(function="count", windows=windows)]
    aggregations += [Aggregation(column="amount", function=f, windows=windows) for f in FUNCTIONS]
    aggregations.append(
        Aggregation(column="merchant", function="approx_count_distinct", windows=windows)
    )
    return FeatureView(
        name="kinds",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=SOURCE,
        tile="1m",
        allowed_lateness="2m",
        ttl="3m",
        aggregations=aggregations,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    windows = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=4, unique=True))
    # Times on, next to and between tile boundaries, spanning a bucket boundary.
    pool = [T0 + k * MINUTE + d for k in range(0, 16) for d in (0, 1, -1, MINUTE // 2)]
    offsets = {0: 0, 1: 0}
    events = []
    for _ in range(draw(st.integers(0, 36))):
        partition = draw(st.integers(0, 1))
        events.append(
            Event(
                ts=draw(st.sampled_from(pool)),  # in any order: out of order, some late
                partition=partition,
                offset=offsets[partition],
                values={
                    "user_id": draw(st.sampled_from(USERS)),
                    "amount": float(draw(st.integers(-50, 50))),
                    "merchant": draw(st.sampled_from(["m1", "m2", "m3"])),
                },
            )
        )
        offsets[partition] += 1
    reads = draw(st.lists(st.sampled_from(pool + [T0 + 20 * MINUTE]), min_size=1, max_size=6))
    return {
        "view": make_view(windows),
        "events": events,
        "batches": draw(st.integers(1, 4)),
        "reads": reads,
    }


def as_batch(events: list[Event]) -> EventBatch:
    return EventBatch(
        {k: [e.values[k] for e in events] for k in ("user_id", "merchant", "amount")},
        np.array([e.ts for e in events], dtype=np.int64),
        np.array([e.partition for e in events], dtype=np.int64),
        np.array([e.offset for e in events], dtype=np.int64),
    )


def same(feature: str, got: Any, want: Any) -> bool:
    if want is None or got is None:
        return got is None and want is None
    if "approx_count_distinct" in feature:  # the estimate of a count of at most 3 values
        return bool(got == want)
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def windows_of(view: FeatureView) -> dict[str, str]:
    """Feature name -> its window as written."""
    return {
        n: w for a in view.aggregations for w, n in zip(a.windows, a.feature_names(), strict=True)
    }


def online_exact(view: FeatureView, feature: str, mine: list[Event], t: int) -> bool:
    """Whether the tiles can give the formula's value at `t` (docs/semantics.md): a window
    ending before t's tile always; one ending at t unless an event after t is in t's own tile
    (sliding) or anywhere (lifetime)."""
    spec = tile_window(windows_of(view)[feature], view.tile_us)
    if not spec.cuts_at_read_time:
        return True
    if spec.is_lifetime:
        return all(e.ts <= t for e in mine)
    return all(e.ts <= t or e.ts // MINUTE != t // MINUTE for e in mine)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_window_kinds_online_and_offline_equal_the_reference(
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
            # Batches in consumption order (offsets ascend per partition).
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
                assert same(name, row[name], want[name]), (where, "offline", row[name], want[name])
                newest = reference.newest_event(mine, windows[name], view.tile_us, t)
                stale = newest is not None and view.ttl_us is not None and newest < t - view.ttl_us
                status = "missing" if newest is None else "stale" if stale else "ok"
                assert row[f"{name}__status"] == status, (where, row[f"{name}__status"], status)
                if online_exact(view, name, mine, t):
                    value = online_rows[t][u][name]
                    assert same(name, value.value, want[name]), (where, "online", value, want)
                    assert value.status == status, (where, value.status, status)
    if report is not None:
        assert [c.feature for c in report.checks if c.mismatched] == [], report.checks


def test_lifetime_state_never_expires_and_is_rebuilt_from_the_log_after_a_wipe(
    redis: str, tmp_path: Path
) -> None:
    """The lifetime key has no expiry while tile keys do; after Redis loses everything, a
    loading writer and a running one both rebuild it from the offline log, and every window
    kind reads the reference's value over all the events applied."""
    view = make_view(["2m", "3m_offset_1m", "4m_every_2m", "lifetime"])
    layout = TileLayout(view)
    rng = np.random.default_rng(7)
    events = [
        Event(
            ts=T0 + int(rng.integers(0, 30 * MINUTE)),
            partition=i % 2,
            offset=i // 2,
            values={
                "user_id": USERS[int(rng.integers(0, 2))],
                "amount": float(rng.integers(-50, 50)),
                "merchant": f"m{int(rng.integers(0, 9))}",
            },
        )
        for i in range(300)
    ]
    namespace = f"test:{uuid.uuid4().hex[:12]}"
    client = client_of(redis)
    online = OnlineStore(RedisSettings(url=redis, namespace=namespace))
    offline = OfflineStore(OfflineSettings(root=tmp_path))
    keys = [entity_key([u]) for u in USERS]

    def check(upto: int) -> None:
        applied, _late = reference.apply_lateness(events[:upto], view.lateness_us)
        t = max(e.ts for e in applied)
        [got] = read_features(online, [(view.name, 1, layout, keys)], t)
        for user, values in zip(USERS, got, strict=True):
            mine = [e for e in applied if e.values["user_id"] == user]
            for name, want in reference.view_features(mine, view, t).items():
                assert values[name].status != "rebuilding"
                assert same(name, values[name].value, want), (user, name, values[name], want)

    try:
        writer = ViewWriter(online, offline, view, 1)
        writer.load_positions()
        first = as_batch(events[:100])
        writer.apply(first, first.last_offsets())
        prefix = online.entity_prefix(view.name, 1, keys[0])
        assert client.pttl(f"{prefix}:life") == -1
        assert client.pttl(f"{prefix}:life:h:merchant:b") == -1
        tiles = [k for k in client.scan_iter(match=f"{prefix}:[0-9]*") if b":h:" not in k]
        assert tiles and all(client.pttl(k) > 0 for k in tiles)
        check(100)

        delete_matching(client, f"{namespace}:*")  # restarted empty: a loading writer rebuilds
        loader = ViewWriter(online, offline, view, 1)
        loader.load_positions()
        assert loader.rebuilds == 1
        check(100)

        second = as_batch(events[100:200])
        loader.apply(second, second.last_offsets())
        delete_matching(client, f"{namespace}:*")  # lost under a running writer
        third = as_batch(events[200:])
        loader.apply(third, third.last_offsets())
        assert loader.rebuilds == 2
        check(300)

        # `fstore remove` deletes the lifetime states (tiles expire by themselves).
        lifetime = [k for k in client.scan_iter(match=f"{namespace}:*") if b":life" in k]
        assert len(lifetime) == 2 * len(USERS)  # a state and a HyperLogLog per user
        assert online.drop_lifetime(view.name, 1) == len(lifetime)
        left = list(client.scan_iter(match=f"{namespace}:*"))
        assert left and not [k for k in left if b":life" in k]
    finally:
        online.close()
        delete_matching(client, f"{namespace}:*")
