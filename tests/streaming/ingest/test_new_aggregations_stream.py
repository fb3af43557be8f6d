"""The new aggregations end to end on real Kafka and Redis: a random out-of-order stream with late
events through the ingest worker gives online percentiles within the sketch's accuracy of the
brute-force order statistic, `first` / `last` (strings and numbers), `last_n` and `top_k` equal
to it, every value equal (no tolerance) to the training set's, and `verify_view` finds 0
mismatches."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from featurestore.config import Settings
from featurestore.definitions import Aggregation, FeatureView
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore, read_features
from featurestore.percentiles import bucket_keys, bucket_value
from featurestore.registry import RegisteredView
from featurestore.tiles import TileLayout
from featurestore.verify import verify_view
from streaming.ingest.worker import Worker
from tests.reference import apply_lateness, percentile_matches, view_features
from tests.streaming.conftest import (
    US,
    Published,
    event_payload,
    make_view,
    publish,
    random_events,
)

pytestmark = pytest.mark.integration


def percentile_view(topic: str) -> FeatureView:
    base = make_view(topic)
    return FeatureView(
        name="user_pct",
        entities=base.entities,
        source=base.source,
        tile="1m",
        allowed_lateness="5m",
        aggregations=[
            Aggregation(function="count", windows=["10m", "2h"]),
            Aggregation(
                column="amount",
                function="approx_percentile",
                windows=["10m", "2h"],
                percentiles=[0.0, 0.5, 0.9, 0.99],
            ),
            Aggregation(column="merchant", function="last", windows=["10m"]),
            Aggregation(column="merchant", function="first", windows=["2h"]),
            Aggregation(column="amount", function="first", windows=["2h"]),
            Aggregation(column="merchant", function="last_n", n=4, windows=["2h"]),
            Aggregation(column="merchant", function="top_k", k=3, windows=["2h"]),
        ],
    )


def test_stream_percentiles_match_reference_training_set_and_verify(
    settings: Settings, topic: str, run_worker: Callable[..., Worker]
) -> None:
    rng = random.Random(2112)
    events = random_events(rng, 3_000, users=12)
    where = publish(settings.kafka, topic, [event_payload(e) for e in events])
    published = [
        Published(int(datetime.fromisoformat(str(e["ts"])).timestamp() * US), p, o, e)
        for e, (p, o) in zip(events, where, strict=True)
    ]
    view = percentile_view(topic)
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g", batch_size=500)
    run_worker(worker, lambda w: w.counters.consumed >= len(events))
    deadline = time.monotonic() + 60
    while worker.counters.consumed < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    applied, late = apply_lateness(published, view.lateness_us)
    assert worker.counters.applied == len(applied) and len(late) > 0

    layout = TileLayout(view)
    alpha = {f.name: f.accuracy for f in layout.features if f.accuracy is not None}
    users = sorted({str(e.values["user_id"]) for e in published})
    registered = RegisteredView(view, 1, view.fingerprint(), datetime.fromtimestamp(0, UTC))
    newest = max(e.ts for e in applied)
    for at in (newest, newest + 5 * 60 * US, newest + 90 * 60 * US):
        [online] = read_features(OnlineStore(settings.redis), [(view.name, 1, layout, users)], at)
        rows = pa.table(
            {
                "user_id": users,
                "event_timestamp": pa.array([at] * len(users), pa.timestamp("us", tz="UTC")),
            }
        )
        names = view.feature_names()
        offline = HistoricalQuery(
            OfflineStore(settings.offline), rows, [(registered, n) for n in names]
        ).to_arrow()
        for user, got, trained in zip(users, online, offline.to_pylist(), strict=True):
            mine = [e for e in applied if e.values["user_id"] == user]
            for name, exact in view_features(mine, view, at).items():
                assert got[name].value == trained[name], (user, name)  # no tolerance
                if name in alpha:
                    assert percentile_matches(got[name].value, exact, alpha[name]), (user, name)
                    if exact is not None:
                        keys = bucket_keys(np.array([exact]), alpha[name])
                        assert got[name].value == bucket_value(keys, alpha[name])[0]
                else:
                    assert got[name].value == exact, (user, name)

    report = verify_view(settings, registered)
    assert report.points > 0
    assert [c.examples for c in report.checks if c.mismatched] == []
