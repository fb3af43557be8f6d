"""Ingest benchmark: one worker, Kafka -> windowed features in Redis + Parquet (see BENCHMARKS.md).

Workload: `--users` users, `--events` events of one day of event time, count / sum / mean / max
of `amount` over 10m, 1h and 24h in 1-minute tiles, on a topic of `--partitions` partitions. The
events are produced once; then each consumer reads the same topic with a consumer group of its
own, one after another, each in a subprocess of its own (so a measured RSS is that process's):

1. floor  — consume + `orjson.loads`, nothing else: what one Python process can consume at all;
2. worker — `streaming.ingest.worker.Worker`, end to end, first message to last applied event, with
   the time spent in decode, the Redis merge and the Parquet append; floor and worker alternate
   `--repeats` times and the medians are the figures (every run is listed too);
3. freshness — produce at `--freshness-rate` events/s with wall-clock event times, while a worker
   runs, and time produce -> visible in `FeatureStore.get_online_features` for probe events;
4. Quix Streams (its own virtualenv) computing the same windows on the same topic;
5. RSS — produce up to `--rss-events` and run a fresh worker over all of them, reading its peak
   RSS (VmHWM) after `--events` and after `--rss-events`.

Kafka and Redis: started here with `featurestore.services` on free ports in a temporary state
directory, unless FSTORE_KAFKA_BOOTSTRAP / FSTORE_REDIS_URL name running ones. Everything shares
the machine, so each measurement also records the CPU that other processes used meanwhile
(`load`), and `--wait-quiet` starts each one in an idle moment. Progress goes to stderr; the
last line on stdout is one JSON object with the figures.

    python bench/ingest.py            # the full run (about 17 minutes on 2 cores)
    python bench/ingest.py --quick    # tiny sizes, well under a minute
    python bench/ingest.py --redis-cluster 3 --rss-events 0 --no-quix   # bench/ingest_scale.py
"""

from __future__ import annotations

import argparse
import json
import pstats
import subprocess  # noqa: S404 - for TimeoutExpired: peers run as subprocesses
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _cli import add_common_arguments, working_folder
from _machine import Meter, machine
from _peers import quix_python
from _report import log, ratio, show
from _services import (
    cleanup_services,
    register_views,
    run_settings,
    server_cpu,
    services_versions,
    start_services,
)
from _subprocesses import run_json
from ingest_freshness import measure_freshness
from ingest_processes import run_child
from ingest_scale import ScaleTarget, measure_scale, print_scale_summary, start_cluster
from ingest_workload import TILE_MS, WINDOWS, Events, generate, make_view, produce

from featurestore.config import (
    KafkaSettings,
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    Settings,
)
from featurestore.store import FeatureStore
from featurestore.timestamps import from_us
from streaming.topics import ensure_topic

HERE = Path(__file__).resolve().parent
GOALS = {
    "events_per_s": 100_000,
    "floor_ratio": 0.4,
    "quix_ratio": 5.0,
    "freshness_p99_ms": 500,
    "rss_growth_pct": 10.0,
}


# -- Quix Streams --------------------------------------------------------------------------------


def measure_quix(
    kafka: KafkaSettings, topic: str, events: int, seconds: float, windows: str, state_dir: Path
) -> dict[str, Any]:
    """Quix Streams on `topic` (its own consumer settings: `--kafka-property` is not passed)."""
    python = quix_python()
    argv = [
        str(python),
        str(HERE / "quix_app.py"),
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        topic,
        "--group",
        f"bench-quix-{windows}-{uuid.uuid4().hex[:8]}",
        "--state-dir",
        str(state_dir / f"quix-{windows}"),
        "--events",
        str(events),
        "--seconds",
        str(seconds),
        "--windows",
        windows,
    ]
    return run_json("the Quix app", argv, timeout=seconds + 300)[-1]


# -- the run -------------------------------------------------------------------------------------


def check_values(store: FeatureStore, view: str, events: Events, samples: int = 25) -> int:
    """Compare count and sum over 24h with numpy for sample users; returns how many differ."""
    as_of_ms = int(events.ts_ms.max())
    tiles = events.ts_ms // TILE_MS
    in_window = (tiles >= as_of_ms // TILE_MS - WINDOWS["24h"] + 1) & (events.ts_ms <= as_of_ms)
    users = np.unique(events.user)[:samples]
    keys = [f"u{u:05d}" for u in users.tolist()]
    refs = [f"{view}:count_24h", f"{view}:amount_sum_24h"]
    got = store.get_online_features(
        entities={"user_id": keys}, features=refs, as_of=from_us(as_of_ms * 1000)
    )
    wrong = 0
    for i, user in enumerate(users.tolist()):
        mine = in_window & (events.user == user)
        count, total = int(mine.sum()), float(events.amount[mine].sum())
        got_count = got.features[refs[0]].values[i] or 0
        got_sum = got.features[refs[1]].values[i] or 0.0
        if got_count != count or abs(got_sum - total) > 1e-6 * max(1.0, abs(total)):
            wrong += 1
    return wrong


def run(args: argparse.Namespace) -> dict[str, Any]:
    with working_folder("fstore-bench-") as state_dir:
        return measure(args, state_dir)


def measure(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    properties = dict(item.split("=", 1) for item in args.kafka_property)
    services = start_services(state_dir / "services", properties)
    namespaces: list[str] = []
    topics: list[str] = []

    def start_meter() -> Meter:
        return Meter(lambda: server_cpu(services), args.wait_quiet)

    try:
        info = machine(**services_versions(services))
        log(f"machine: {info}")
        topic, fresh_topic = f"bench.ingest.{run_id}", f"bench.fresh.{run_id}"
        topics += [topic, fresh_topic]
        for name in topics:
            ensure_topic(services.kafka, name, partitions=args.partitions)

        def settings_for(label: str) -> Settings:
            namespace = f"bench-{run_id}-{label}"
            namespaces.append(namespace)
            offline = OfflineSettings(root=state_dir / f"offline-{label}")
            return run_settings(services, state_dir, namespace, offline=offline)

        main_view = make_view("bench_txn", topic, args.percentiles, args.last_n)
        fresh_view = make_view("bench_fresh", fresh_topic, args.percentiles, args.last_n)
        register_views(RegistrySettings(path=state_dir / "registry"), main_view, fresh_view)
        load: dict[str, Any] = {}
        result: dict[str, Any] = {
            "machine": info,
            "percentiles": args.percentiles,
            "last_n": args.last_n,
            "events": args.events,
            "users": args.users,
            "load": load,
        }

        log(f"producing {args.events:,} events for {args.users:,} users to {topic}")
        began = time.perf_counter()
        produced, columns = produce(
            services.kafka, topic, generate(0, args.events, args.users, args.events, args.seed)
        )
        result["produce_events_per_s"] = round(produced / (time.perf_counter() - began))
        child_timeout = 600 + args.rss_events / 1_000
        if args.redis_cluster:
            result.update(measure_cluster(args, services, state_dir, main_view.name, columns))
            return result

        # Floor and worker alternate, so that both see the same conditions; medians reported.
        floors: list[dict[str, Any]] = []
        workers: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            meter = start_meter()
            floor = run_child(
                "floor",
                {
                    "kafka": services.kafka.model_dump(mode="json"),
                    "topic": topic,
                    "group": f"bench-floor-{run_id}-{repeat}",
                    "events": args.events,
                    "batch_size": args.batch_size,
                },
                child_timeout,
            )[-1]
            floor["events_per_s"] = round(floor["events"] / floor["seconds"])
            floor["load"] = meter.stop()
            floors.append(floor)
            log(f"floor {repeat + 1}/{args.repeats}: {floor['events_per_s']:,} events/s")

            settings = settings_for(f"main{repeat}")
            meter = start_meter()
            worker = run_child(
                "worker",
                {
                    "settings": settings.model_dump(mode="json"),
                    "view": main_view.name,
                    "group": f"bench-worker-{run_id}-{repeat}",
                    "events": args.events,
                    "batch_size": args.batch_size,
                },
                child_timeout,
            )[-1]
            worker["events_per_s"] = round(worker["events"] / worker["seconds"])
            worker["load"] = meter.stop()
            worker["values_wrong"] = check_values(FeatureStore(settings), main_view.name, columns)
            workers.append(worker)
            log(f"worker {repeat + 1}/{args.repeats}: {worker['events_per_s']:,} events/s")
        result.update(summarize_throughput(floors, workers))
        load["floor"] = [f["load"] for f in floors]
        load["worker"] = [w["load"] for w in workers]
        log(f"worker runs: {workers}")

        if args.profile:
            log(f"profiling one more worker run (not in the figures) into {args.profile}")
            run_child(
                "worker",
                {
                    "settings": settings_for("profile").model_dump(mode="json"),
                    "view": main_view.name,
                    "group": f"bench-profile-{run_id}",
                    "events": args.events,
                    "batch_size": args.batch_size,
                    "profile": str(args.profile),
                },
                child_timeout,
            )
            stats = pstats.Stats(str(args.profile), stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)

        log(f"freshness: {args.freshness_rate:,} events/s for {args.freshness_seconds:g}s")
        meter = start_meter()
        result.update(
            measure_freshness(
                settings_for("fresh"),
                fresh_topic,
                fresh_view.name,
                args.freshness_rate,
                args.freshness_seconds,
                args.probe_every,
                args.poll_timeout,
            )
        )
        load["freshness"] = meter.stop()
        log(f"freshness: p50 {result['freshness_p50_ms']} ms, p99 {result['freshness_p99_ms']} ms")

        result["quix_events_per_s"] = None
        if args.quix:
            for windows in args.quix_windows:
                key = "quix" if windows == "hopping" else f"quix_{windows}"
                log(f"Quix Streams ({windows} windows), at most {args.quix_seconds:g}s")
                meter = start_meter()
                try:
                    quix = measure_quix(
                        services.kafka,
                        topic,
                        args.events,
                        args.quix_seconds,
                        windows,
                        state_dir,
                    )
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                    log(f"Quix Streams failed: {exc}")
                    result[f"{key}_error"] = str(exc)[-2000:]
                    continue
                result[f"{key}_events_per_s"] = round(quix["events"] / quix["seconds"])
                result[f"{key}_events"] = quix["events"]
                result[f"{key}_completed"] = quix["completed"]
                load[key] = meter.stop()
                log(f"Quix Streams ({windows}): {quix}")

        result["rss_mb_1m"] = result["rss_mb_5m"] = None
        if args.rss_events:
            extra = args.rss_events - args.events
            log(f"RSS: producing {extra:,} more events, then one worker over {args.rss_events:,}")
            if extra > 0:
                produce_more = generate(args.events, extra, args.users, args.events, args.seed)
                _, more = produce(services.kafka, topic, produce_more)
                del more
            marks = sorted({args.events, args.rss_events})
            meter = start_meter()
            lines = run_child(
                "worker",
                {
                    "settings": settings_for("rss").model_dump(mode="json"),
                    "view": main_view.name,
                    "group": f"bench-rss-{run_id}",
                    "events": args.rss_events,
                    "batch_size": args.batch_size,
                    "marks": marks,
                },
                child_timeout,
            )
            by_mark = {line["mark"]: line for line in lines if "mark" in line}
            result["rss_mb_1m"] = round(by_mark[args.events]["rss_mb"], 1)
            result["rss_mb_5m"] = round(by_mark[args.rss_events]["rss_mb"], 1)
            result["rss_checkpoints"] = marks
            load["rss"] = meter.stop()
            result["rss_run_events_per_s"] = round(lines[-1]["events"] / lines[-1]["seconds"])
            log(f"RSS: {by_mark}")

        result["floor_ratio"] = ratio(result["events_per_s"], result["floor_events_per_s"])
        result["quix_ratio"] = ratio(result["events_per_s"], result["quix_events_per_s"])
        result["quix_sliding_ratio"] = ratio(
            result["events_per_s"], result.get("quix_sliding_events_per_s")
        )
        growth = None
        if result["rss_mb_1m"] and result["rss_mb_5m"]:
            growth = round(100 * (result["rss_mb_5m"] / result["rss_mb_1m"] - 1), 1)
        result["rss_growth_pct"] = growth
        result["goals_met"] = goals_met(result)
        busy = {
            f"{phase} {i + 1}" if isinstance(entries, list) else phase: figures[
                "other_processes_cores"
            ]
            for phase, entries in load.items()
            for i, figures in enumerate(entries if isinstance(entries, list) else [entries])
            if "other_processes_cores" in figures
        }
        result["max_other_processes_cores"] = max(busy.values(), default=None)
        for phase, cores in busy.items():
            if cores > 0.15:
                log(f"warning: other processes used {cores} cores during the {phase} measurement")
        return result
    finally:
        cleanup_services(services, topics, namespaces)


def measure_cluster(
    args: argparse.Namespace, services: Any, state_dir: Path, view: str, columns: Events
) -> dict[str, Any]:
    """The `--redis-cluster N` run: one and two workers on one Redis and on a cluster."""
    cluster = start_cluster(state_dir / "scale", args.redis_cluster)
    try:
        targets = [
            ScaleTarget("single", RedisSettings(url=services.redis_url), [services.redis_url]),
            ScaleTarget(
                "cluster",
                RedisSettings(url=cluster.url, cluster=True),
                [node.url for node in cluster.nodes],
            ),
        ]

        def settings_for(label: str, redis: RedisSettings) -> Settings:
            namespace = f"bench-scale-{label}-{uuid.uuid4().hex[:6]}"
            offline = OfflineSettings(root=state_dir / f"offline-scale-{label}")
            base = run_settings(services, state_dir, namespace, offline=offline)
            scoped = redis.model_copy(update={"namespace": namespace})
            return base.model_copy(update={"redis": scoped})

        spec = {"view": view, "events": args.events, "batch_size": args.batch_size}
        return measure_scale(
            targets,
            settings_for,
            spec,
            args.repeats,
            lambda settings: check_values(FeatureStore(settings), view, columns),
            600 + args.events / 1_000,
        )
    finally:
        cluster.stop()


def summarize_throughput(
    floors: list[dict[str, Any]], workers: list[dict[str, Any]]
) -> dict[str, Any]:
    """Medians of the repeated floor and worker runs, with every run's figure beside them."""

    def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
        ranked = sorted(runs, key=lambda r: r["events_per_s"])
        return ranked[(len(ranked) - 1) // 2]

    floor, worker = median_run(floors), median_run(workers)
    return {
        "events_per_s": worker["events_per_s"],
        "floor_events_per_s": floor["events_per_s"],
        "events_per_s_runs": [w["events_per_s"] for w in workers],
        "floor_events_per_s_runs": [f["events_per_s"] for f in floors],
        "floor_cpu_share": round(floor["cpu_seconds"] / floor["seconds"], 2),
        "worker_cpu_share": round(worker["cpu_seconds"] / worker["seconds"], 2),
        "worker_seconds": round(worker["seconds"], 2),
        "worker_phase_seconds": {k: round(v, 2) for k, v in worker["phase_seconds"].items()},
        "worker_batches": worker["batches"],
        "worker_rss_mb": round(worker["rss_mb"], 1),
        "worker_late": sum(w["late"] for w in workers),
        "worker_values_wrong": sum(w["values_wrong"] for w in workers),
    }


def goals_met(result: dict[str, Any]) -> dict[str, bool | None]:
    def at_least(key: str) -> bool | None:
        value = result.get(key)
        return None if value is None else value >= GOALS[key]

    def at_most(key: str) -> bool | None:
        value = result.get(key)
        return None if value is None else value <= GOALS[key]

    return {
        "events_per_s": at_least("events_per_s"),
        "floor_ratio": at_least("floor_ratio"),
        "quix_ratio": at_least("quix_ratio"),
        "freshness_p99_ms": at_most("freshness_p99_ms"),
        "rss_growth_pct": at_most("rss_growth_pct"),
    }


def print_summary(result: dict[str, Any]) -> None:
    goals = result["goals_met"]
    rows = [
        ("worker events/s", show(result["events_per_s"]), ">= 100,000", goals["events_per_s"]),
        ("floor events/s", show(result["floor_events_per_s"]), "", None),
        ("worker / floor", show(result["floor_ratio"], "x"), ">= 0.4x", goals["floor_ratio"]),
        ("Quix events/s", show(result["quix_events_per_s"]), "", None),
        ("worker / Quix", show(result["quix_ratio"], "x"), ">= 5x", goals["quix_ratio"]),
        ("freshness p50", show(result["freshness_p50_ms"], " ms"), "", None),
        (
            "freshness p99",
            show(result["freshness_p99_ms"], " ms"),
            "<= 500 ms",
            goals["freshness_p99_ms"],
        ),
        ("RSS after 1st mark", show(result["rss_mb_1m"], " MiB"), "", None),
        ("RSS after 2nd mark", show(result["rss_mb_5m"], " MiB"), "", None),
        ("RSS growth", show(result["rss_growth_pct"], " %"), "<= 10 %", goals["rss_growth_pct"]),
    ]
    for name, value, goal, met in rows:
        verdict = {True: "met", False: "MISSED", None: ""}[met]
        print(f"{name:<20} {value:>16}  {goal:<11} {verdict}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rss-events", type=int, default=5_000_000, help="0: skip the RSS run")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=20_000, help="the worker's default")
    parser.add_argument("--repeats", type=int, default=3, help="floor and worker runs (median)")
    parser.add_argument("--freshness-rate", type=int, default=10_000, help="events/s")
    parser.add_argument("--freshness-seconds", type=float, default=30.0)
    parser.add_argument("--probe-every", type=int, default=200, help="every Nth event is a probe")
    parser.add_argument(
        "--poll-timeout",
        type=float,
        help="the freshness worker's consume timeout in s (default: the Worker's own)",
    )
    parser.add_argument("--no-quix", dest="quix", action="store_false", help="skip Quix Streams")
    parser.add_argument(
        "--quix-seconds", type=float, default=300.0, help="time budget of each Quix run"
    )
    parser.add_argument(
        "--quix-windows",
        nargs="+",
        choices=["hopping", "sliding"],
        default=["hopping", "sliding"],
        help="hopping (1-minute step: the headline figure) and/or sliding (exact windows)",
    )
    parser.add_argument(
        "--kafka-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka property for every client (floor, worker, producers); repeatable",
    )
    parser.add_argument(
        "--percentiles",
        action="store_true",
        help="the view also computes p50/p90/p99 of amount over every window (approx_percentile)",
    )
    parser.add_argument(
        "--last-n",
        type=int,
        default=0,
        metavar="N",
        help="the view also keeps the N newest amounts over 1h (last_n); 0: not",
    )
    add_common_arguments(parser, files=False)
    parser.add_argument("--profile", type=Path, help="cProfile the worker run into this file")
    parser.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="N",
        help="only the scale run: one and two workers on one Redis and on a local cluster of N "
        "masters (bench/ingest_scale.py)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rss_events, args.users, args.repeats = 5_000, 10_000, 500, 1
        args.freshness_seconds, args.probe_every = 3.0, 100
        args.quix_seconds = min(args.quix_seconds, 10.0)
    if args.rss_events and args.rss_events < args.events:
        parser.error("--rss-events must be 0 or at least --events")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    result = run(args)
    if args.redis_cluster:
        print_scale_summary(result)
    else:
        print_summary(result)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
