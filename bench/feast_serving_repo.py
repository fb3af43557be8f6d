"""The Feast repo of bench/serving.py: 12 features per user, materialized into Redis.

It runs in Feast's own virtualenv, so it imports nothing from fstore; `bench/feast_serving.py`
starts it with that interpreter, then starts `feast serve` on the repo it leaves. The values are
the ones fstore serves (one row per user, read from our online store by the benchmark), so the
feature server reads the same numbers from the same Redis (another database). The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feast
import pyarrow.parquet as pq
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", required=True, help="a folder for the Feast repo")
    parser.add_argument("--project", required=True)
    parser.add_argument("--redis", required=True, help="Feast's connection string: host:port,db=N")
    parser.add_argument("--values", required=True, help="Parquet: user_id, event_timestamp, ...")
    parser.add_argument("--view", required=True, help="the feature view's name")
    args = parser.parse_args()

    repo = Path(args.repo)
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {args.project}\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "offline_store:\n  type: file\n"
        f"online_store:\n  type: redis\n  connection_string: '{args.redis}'\n"
        "entity_key_serialization_version: 3\n"
    )
    names = [name for name in pq.read_schema(args.values).names if name not in ("user_id", "ts")]
    store = FeatureStore(repo_path=str(repo))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(name=f"{args.view}_values", path=args.values, timestamp_field="ts")
    view = FeatureView(
        name=args.view,
        entities=[user],
        ttl=timedelta(days=2),
        schema=[Field(name=name, dtype=Float64) for name in names],
        source=source,
    )
    service = FeatureService(name="scoring", features=[view])
    store.apply([user, source, view, service])
    began = time.perf_counter()
    now = datetime.now(UTC)
    store.materialize(start_date=now - timedelta(days=1), end_date=now + timedelta(minutes=1))
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - began,
                "rows": pq.read_metadata(args.values).num_rows,
                "features": names,
                "feast": feast.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
