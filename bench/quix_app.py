"""The peer in bench/ingest.py: Quix Streams computing the benchmark's windowed aggregations.

It runs in a virtualenv of its own (Quix Streams 3.28 pins confluent-kafka < 2.13, fstore needs
>= 2.16), so it imports nothing from fstore; `bench/ingest.py` creates that virtualenv and starts
this file with its interpreter. The last line printed is one JSON object with the figures.

Closest equivalent of fstore's view: per Kafka key (the user), count / sum / mean / max of
`amount` over 10m, 1h and 24h hopping windows that advance in 1-minute steps — the hop plays the
part of fstore's 1-minute tile (a window's far edge moves in whole minutes in both) — keyed by
the event's own `ts` field, with 5 minutes of grace like the view's allowed lateness. Results are
emitted when a window closes (`.final()`) and only counted, so nothing downstream costs time.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import aggregations as agg

WINDOWS_MS = {"10m": 600_000, "1h": 3_600_000, "24h": 86_400_000}
STEP_MS = 60_000
GRACE_MS = 300_000


def event_time_ms(value: Any, _headers: Any, _timestamp: int, _timestamp_type: Any) -> int:
    """Event time from the payload (ISO 8601 with an offset), as fstore reads it."""
    return round(datetime.fromisoformat(value["ts"]).timestamp() * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--events", type=int, required=True, help="stop after this many")
    parser.add_argument("--seconds", type=float, required=True, help="or after this long")
    parser.add_argument("--windows", choices=["hopping", "sliding"], default="hopping")
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer="json", timestamp_extractor=event_time_ms)
    sdf = app.dataframe(topic)

    seen = {"events": 0, "windows_closed": 0}
    clock: dict[str, float] = {}

    def closed(_result: Any) -> None:
        seen["windows_closed"] += 1

    for name, duration in WINDOWS_MS.items():
        if args.windows == "hopping":
            window = sdf.hopping_window(
                duration_ms=duration, step_ms=STEP_MS, grace_ms=GRACE_MS, name=f"amount_{name}"
            )
        else:
            window = sdf.sliding_window(
                duration_ms=duration, grace_ms=GRACE_MS, name=f"amount_{name}"
            )
        branch = window.agg(
            count=agg.Count(),
            sum=agg.Sum("amount"),
            mean=agg.Mean("amount"),
            max=agg.Max("amount"),
        ).final()
        branch.update(closed)

    def count(_value: Any) -> None:
        now = time.perf_counter()
        clock.setdefault("first", now)
        seen["events"] += 1
        if seen["events"] >= args.events or now - clock["first"] > args.seconds:
            clock.setdefault("last", now)
            app.stop()

    # Defined after the window branches, so it runs after them for each message.
    sdf.update(count)
    app.run()
    finished = time.perf_counter()
    first = clock.get("first", finished)
    last = clock.get("last", finished)
    print(
        json.dumps(
            {
                "events": seen["events"],
                "seconds": last - first,
                "seconds_with_final_checkpoint": finished - first,
                "windows_closed": seen["windows_closed"],
                "completed": seen["events"] >= args.events,
                "windows": args.windows,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
