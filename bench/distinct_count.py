"""What exact online/offline distinct counts cost a training set: the offline HyperLogLog that
reproduces Redis's (featurestore/offline/sketches.py) against DuckDB's own windowed
`approx_count_distinct` (whose estimate differs from Redis's) and the exact `count(DISTINCT)`, in
the same run, over the same events and windows.

    .venv/bin/python bench/distinct_count.py [--events 500000] [--entities 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # featurestore, from a checkout
from _machine import Meter, machine  # noqa: E402
from _report import emit, log  # noqa: E402

from featurestore.definitions import ValueType  # noqa: E402
from featurestore.offline.sketches import distinct_count_sql, register_sketches  # noqa: E402

HOUR_US = 3_600_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--entities", type=int, default=1_000)
    parser.add_argument("--values", type=int, default=5_000, help="distinct merchants")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    con = duckdb.connect()
    register_sketches(con)
    con.execute(
        f"CREATE TABLE events AS SELECT (random() * {args.entities})::INT::VARCHAR AS user_id, "
        f"(random() * {24 * HOUR_US})::BIGINT AS ts, "
        f"'m' || (random() * {args.values})::INT::VARCHAR AS merchant FROM range({args.events})"
    )
    variants = {
        "duckdb_approx": lambda w: f"approx_count_distinct(merchant) OVER {w}",
        "exact_count_distinct": lambda w: f"count(DISTINCT merchant) OVER {w}",
        "redis_hll": lambda w: distinct_count_sql("merchant", ValueType.STRING, w),
    }
    figures: dict[str, dict[str, float]] = {}
    for hours in (1, 24):
        frame = (
            f"w AS (PARTITION BY user_id ORDER BY ts "
            f"RANGE BETWEEN {hours * HOUR_US} PRECEDING AND CURRENT ROW)"
        )
        best: dict[str, float] = {}
        for _ in range(args.repeat):  # alternate the variants, keep each one's best
            for name, sql in variants.items():
                meter = Meter()
                query = f"SELECT sum(x) FROM (SELECT {sql('w')} AS x FROM events WINDOW {frame})"
                con.execute(query).fetchone()
                measured = meter.stop()
                seconds = measured["seconds"]
                best[name] = min(best.get(name, seconds), seconds)
                log(f"{hours}h {name}: {measured}")
        best["redis_hll_vs_duckdb_approx"] = best["redis_hll"] / best["duckdb_approx"]
        figures[f"{hours}h"] = best
    emit({"machine": machine(), "events": args.events, "entities": args.entities, **figures})


if __name__ == "__main__":
    main()
