"""The peer in bench/training_set.py: Feast's point-in-time join of the latest `amount`.

It runs in a virtualenv of its own (Feast pins its own pandas / pyarrow / numpy ranges), so it
imports nothing from fstore (bench/_machine.py, for the peak RSS, is standard library only);
`bench/training_set.py` creates that virtualenv and starts this file with its interpreter. The
last line printed is one JSON object with the figures.

What Feast can do of the benchmark's view: a feature view's value at time t is its source's
newest row for the entity with `t - ttl <= event_timestamp <= t`. With the raw events as the
source and `amount` as the feature, three views with TTLs of 10m, 1h and 24h give the newest
event's amount in each window — fstore's `amount_last_10m / 1h / 24h`, except that fstore's far
edge moves in whole tiles (see docs/semantics.md), so its windows are within Feast's.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

import feast
import numpy as np
import pyarrow.parquet as pq
from _machine import peak_rss_mb
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

WINDOWS = {"10m": timedelta(minutes=10), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, help="Parquet: user_id, amount, event time")
    parser.add_argument("--labels", required=True, help="Parquet: user_id, event_timestamp, ...")
    parser.add_argument("--rows", type=int, required=True, help="the first N label rows")
    parser.add_argument("--store", choices=["duckdb", "file"], default="duckdb")
    parser.add_argument("--repo", required=True, help="a folder for the Feast repo")
    parser.add_argument("--output", required=True, help="the training set, as Parquet")
    args = parser.parse_args()

    repo = Path(args.repo)
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: fstore_bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        f"offline_store:\n  type: {args.store}\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(repo))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(name="txn_events", path=args.source, timestamp_field="event_timestamp")
    views = [
        FeatureView(
            name=f"last_{window}",
            entities=[user],
            ttl=ttl,
            schema=[Field(name="amount", dtype=Float64)],
            source=source,
        )
        for window, ttl in WINDOWS.items()
    ]
    store.apply([user, source, *views])

    # Loaded before the clock starts: Feast takes a DataFrame (fstore read a Parquet path).
    entity_df = pq.read_table(args.labels).slice(0, args.rows).to_pandas()
    entity_df["row"] = np.arange(len(entity_df))
    began, cpu = time.perf_counter(), time.process_time()
    frame = store.get_historical_features(
        entity_df=entity_df,
        features=[f"last_{window}:amount" for window in WINDOWS],
        full_feature_names=True,
    ).to_df()
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    began = time.perf_counter()
    frame.to_parquet(args.output, index=False)
    write_seconds = time.perf_counter() - began
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "write_seconds": write_seconds,
                "rows": len(frame),
                "rss_mb": peak_rss_mb(),
                "feast": feast.__version__,
                "store": args.store,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
