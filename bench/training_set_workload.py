"""The training-set benchmark's workload: the view, the generated events, the offline log they
are written to (as the worker writes it), the label rows, and Feast's source file.

Events of `users` users are spread evenly over `days` days of event time, one per slot at a
random point in it, so no two share a time; label rows (user, time, label) are drawn uniformly
over the same users and time range. The view has count / sum / max of `amount` over 10m, 1h and
24h (9 windowed features) and `last` of `amount` over the same windows (3 features), in 1-minute
tiles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.config import OfflineSettings
from featurestore.definitions import (
    Aggregation,
    Entity,
    FeatureView,
    Function,
    KafkaSource,
    ValueType,
)
from featurestore.offline.log import OfflineStore

__all__ = [
    "FEATURES",
    "LATEST",
    "TILE_US",
    "VIEW",
    "WINDOWED",
    "WINDOWS",
    "Events",
    "generate_events",
    "make_view",
    "user_names",
    "write_feast_source",
    "write_labels",
    "write_log",
]

VIEW = "txn"
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DAY_US = 86_400_000_000
TILE_US = 60_000_000
WINDOWS = {"10m": 10, "1h": 60, "24h": 1440}  # in tiles
WINDOWED = [
    *(f"count_{w}" for w in WINDOWS),
    *(f"amount_sum_{w}" for w in WINDOWS),
    *(f"amount_max_{w}" for w in WINDOWS),
]
LATEST = [f"amount_last_{w}" for w in WINDOWS]
FEATURES = WINDOWED + LATEST


def make_view() -> FeatureView:
    source = KafkaSource(
        name=f"{VIEW}_events",
        topic=f"bench.{VIEW}",
        timestamp_field="ts",
        schema={"user_id": ValueType.STRING, "amount": ValueType.FLOAT64},
    )
    windows = list(WINDOWS)
    return FeatureView(
        name=VIEW,
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=source,
        tile="1m",
        aggregations=[
            Aggregation(function=Function.COUNT, windows=windows),
            *(
                Aggregation(column="amount", function=function, windows=windows)
                for function in (Function.SUM, Function.MAX, Function.LAST)
            ),
        ],
    )


@dataclass
class Events:
    """Generated events in time order, as numpy columns (kept for the brute-force check)."""

    user: np.ndarray
    ts: np.ndarray  # microseconds, strictly increasing: no two events share a time
    amount: np.ndarray
    partition: np.ndarray
    offset: np.ndarray


def user_names(users: int) -> pa.Array:
    return pa.array([f"u{i:05d}" for i in range(users)], pa.string())


def generate_events(count: int, users: int, days: float, partitions: int, seed: int) -> Events:
    """`count` events over `days`, one per slot of `span / count` µs at a random point in it.

    Users are uniform; a user's partition is `user % partitions` and offsets count up per
    partition in time order, as a topic keyed by user would hold them.
    """
    rng = np.random.default_rng([seed, count])
    step = int(days * DAY_US) // count
    ts = START_US + np.arange(count, dtype=np.int64) * step + rng.integers(0, step, count)
    user = rng.integers(0, users, count)
    partition = (user % partitions).astype(np.int32)
    order = np.argsort(partition, kind="stable")  # stable: time order within a partition
    sizes = np.bincount(partition, minlength=partitions)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    offset = np.empty(count, np.int64)
    offset[order] = np.arange(count, dtype=np.int64) - first
    amount = np.round(rng.gamma(2.0, 25.0, count), 2)
    return Events(user, ts, amount, partition, offset)


def write_log(
    root: Path | OfflineSettings, events: Events, users: int, batch: int
) -> dict[str, Any]:
    """Append the events to the offline log (a folder, or any offline settings: an S3 root) in
    worker-sized batches; the files' count and size."""
    store = OfflineStore(root if isinstance(root, OfflineSettings) else OfflineSettings(root=root))
    names = user_names(users)
    began = time.perf_counter()
    files = 0
    for low in range(0, len(events.ts), batch):
        part = slice(low, low + batch)
        table = pa.table(
            {
                "user_id": names.take(pa.array(events.user[part])),
                "amount": pa.array(events.amount[part], pa.float64()),
                "event_timestamp": pa.array(events.ts[part], pa.timestamp("us", tz="UTC")),
                "_partition": pa.array(events.partition[part], pa.int32()),
                "_offset": pa.array(events.offset[part], pa.int64()),
            }
        )
        files += len(store.append(VIEW, 1, table))
    size = sum(
        info.size for info in store.storage.fs.get_file_info(list(map(str, store.files(VIEW, 1))))
    )
    return {"files": files, "bytes": size, "seconds": round(time.perf_counter() - began, 2)}


def write_labels(path: Path, count: int, users: int, days: float, seed: int) -> None:
    rng = np.random.default_rng([seed, count, 1])
    ts = START_US + rng.integers(0, int(days * DAY_US), count)
    table = pa.table(
        {
            "user_id": user_names(users).take(pa.array(rng.integers(0, users, count))),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "label": pa.array(rng.integers(0, 2, count), pa.int8()),
        }
    )
    pq.write_table(table, path)


def write_feast_source(path: Path, events: Events, users: int) -> None:
    """The raw events as one Parquet file: Feast's `last` is its latest row per entity."""
    table = pa.table(
        {
            "user_id": user_names(users).take(pa.array(events.user)),
            "amount": pa.array(events.amount, pa.float64()),
            "event_timestamp": pa.array(events.ts, pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, path)
