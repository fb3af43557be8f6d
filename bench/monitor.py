"""Monitor benchmark: how fast one `fstore monitor` worker digests the prediction log, and what
the prediction log costs the serving app (see BENCHMARKS.md).

1. throughput - a model of 12 features (LightGBM, registered with the reference profile of its
   training rows, as `fstore train` does) and `--predictions` prediction-log records in the
   serving app's format, spread over an hour of event time on a topic of `--partitions`
   partitions, produced before the worker starts. One `streaming.monitor.Monitor` then drains
   them: decode, window accumulators merged into Redis with the positions, every 5-minute
   window closed and reported (drift records to Kafka, latest state in Redis). The figure is
   predictions over the time from its first batch to its last, with the label join off, as
   when no labels topic is configured. A second group then drains the same records with a
   labels topic set (`predictions_per_s_label_index`): each prediction is also written to the
   join's index in Redis, which costs more per record (`--no-label-index` skips it).
2. serving - bench/serving.py's workload and servers (events ingested by the streaming worker,
   a 200-tree model, `fstore serve`): two servers side by side, one with the prediction log
   on (to Kafka) and one with it off, saturated with `hey` in alternating rounds of
   `--seconds`; the medians are `serving_rps_log_on` and `serving_rps_log_off`.

Kafka and Redis are started here on free ports unless FSTORE_KAFKA_BOOTSTRAP / FSTORE_REDIS_URL
name running ones. Progress goes to stderr; the last line on stdout is one JSON object.

    python bench/monitor.py            # the full run (about 6 minutes on 2 cores)
    python bench/monitor.py --quick    # tiny sizes, under a minute
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
from _cli import add_common_arguments, working_folder
from _loadgen import hey
from _machine import Meter, machine
from _report import log, ratio, show
from _services import (
    Services,
    cleanup_services,
    run_settings,
    server_cpu,
    services_versions,
    start_services,
)
from _subprocesses import Child
from confluent_kafka import Consumer, Producer, TopicPartition
from ingest_workload import send
from serving_workload import feature_matrix, generate_events, ingest, write_floor
from serving_workload import register_model as register_serving_model
from serving_workload import train_model as train_serving_model

from featurestore.config import (
    ModelsSettings,
    MonitorSettings,
    ServingSettings,
    Settings,
)
from featurestore.models import (
    DatasetRef,
    FeatureSpec,
    ModelRegistry,
    Objective,
    Signature,
    reference_profile,
)
from featurestore.timestamps import from_us
from streaming.monitor.monitor import Monitor
from streaming.topics import ensure_topic

# bench/serving.py's servers, loaded by path under a name of its own: `import serving` would
# load it as `serving`, shadowing the product's package of that name in this process.
_spec = importlib.util.spec_from_file_location(
    "bench_serving", Path(__file__).with_name("serving.py")
)
assert _spec is not None and _spec.loader is not None
bench_serving = importlib.util.module_from_spec(_spec)
sys.modules["bench_serving"] = bench_serving  # its dataclasses look their module up there
_spec.loader.exec_module(bench_serving)

GOALS = {"predictions_per_s": 50_000, "log_on_vs_off": 0.9}
FEATURES = 12
HOUR_US = 3_600 * 1_000_000
CHUNK = 50_000


# -- 1. monitor throughput -----------------------------------------------------------------------


def population(rng: np.random.Generator, rows: int) -> np.ndarray:
    """12 features of mixed shapes (skewed, uniform, counts, normal with 3% missing)."""
    columns = []
    for j in range(FEATURES):
        kind = j % 4
        if kind == 0:
            column = rng.lognormal(3, 1, rows)
        elif kind == 1:
            column = rng.uniform(0, 1000, rows)
        elif kind == 2:
            column = rng.poisson(3 + j, rows).astype(np.float64)
        else:
            column = rng.normal(j, 1, rows)
            column[rng.random(rows) < 0.03] = np.nan
        columns.append(column)
    return np.column_stack(columns)


def register_drift_model(config: ModelsSettings, seed: int) -> tuple[lgb.Booster, list[str]]:
    rng = np.random.default_rng(seed)
    names = [f"bench__f{j}" for j in range(FEATURES)]
    x = population(rng, 12_000)
    y = (np.nan_to_num(x) @ rng.normal(0, 1, FEATURES) > 0).astype(np.float64)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x[:10_000], y[:10_000], feature_name=names), 50)
    scores = np.asarray(booster.predict(x[10_000:]), dtype=np.float64)
    ModelRegistry(config).register(
        "bench_drift",
        booster.model_to_string(),
        objective=Objective.BINARY,
        signature=Signature(tuple(FeatureSpec(f"bench@1:{n}", n) for n in names), ("user_id",)),
        label="y",
        dataset=DatasetRef("bench", 1, "00" * 32),
        views={"bench": 1},
        params=params,
        metrics={"auc": 0.5},
        primary_metric="auc",
        profile=reference_profile(dict(zip(names, x[:10_000].T, strict=True)), scores),
        who="bench/monitor.py",
    )
    return booster, names


def produce_predictions(
    settings: Settings, topic: str, count: int, partitions: int, seed: int
) -> tuple[int, float]:
    """`count` records over one hour of event time (rising), round-robin over the partitions,
    then one record per partition past the hour so every window closes. (records, seconds)"""
    booster, names = register_drift_model(settings.models, seed)
    closing_us = settings.monitor.lateness_us + 1_000_000
    rng = np.random.default_rng(seed + 1)
    start = 1_772_366_400_000_000  # 2026-03-01T12:00:00Z
    producer = Producer(
        settings.kafka.client_config(
            **{"linger.ms": 50, "compression.type": "lz4", "batch.num.messages": 10_000}
        )
    )
    began = time.perf_counter()
    sent = 0
    for first in range(0, count + partitions, CHUNK):
        rows = min(CHUNK, count + partitions - first)
        x = population(rng, rows)
        scores = booster.predict(x).tolist()
        features = np.where(np.isnan(x), None, x).tolist()
        for i in range(rows):
            n = first + i
            # The last ones pass the hour by the allowed lateness: the last window closes.
            at = start + (n * HOUR_US // count if n < count else HOUR_US + closing_us)
            record = {
                "request_id": uuid.uuid4().hex,
                "at": from_us(at).isoformat(),
                "model": "bench_drift",
                "version": 1,
                "alias": "production",
                "role": "served",
                "entities": {"user_id": f"u{n % 10_000}"},
                "features": dict(zip(names, features[i], strict=True)),
                "score": scores[i],
            }
            send(producer, topic, orjson.dumps(record), partition=n % partitions)
            sent += 1
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("Kafka did not take every prediction record")
    return sent, time.perf_counter() - began


def measure_monitor(args: argparse.Namespace, settings: Settings, meter_cpu: Any) -> dict[str, Any]:
    """Produce once, then drain with one monitor; with `--label-index`, drain again with a
    second group whose labels topic is set (each prediction also goes into the join index)."""
    topic = settings.serving.prediction_log_topic
    ensure_topic(settings.kafka, topic, partitions=args.partitions)
    log(f"producing {args.predictions:,} prediction records to {topic}")
    sent, produce_seconds = produce_predictions(
        settings, topic, args.predictions, args.partitions, args.seed
    )
    out = drain(args, settings, f"{topic}.monitor", sent, meter_cpu)
    out.update(
        predictions=args.predictions,
        features=FEATURES,
        partitions=args.partitions,
        batch_size=args.batch_size,
        produce_seconds=round(produce_seconds, 2),
        drift_topic_records=topic_size(settings, settings.monitor.drift_topic),
    )
    if args.label_index:
        labels = f"{topic}.labels"
        ensure_topic(settings.kafka, labels, partitions=args.partitions)
        monitor = settings.monitor.model_copy(
            update={"labels_topic": labels, "drift_topic": f"{settings.monitor.drift_topic}.2"}
        )
        indexed = settings.model_copy(update={"monitor": monitor})
        out["label_index"] = drain(args, indexed, f"{topic}.monitor-labels", sent, meter_cpu)
    return out


def drain(
    args: argparse.Namespace, settings: Settings, group: str, sent: int, meter_cpu: Any
) -> dict[str, Any]:
    """Run a monitor of group `group` until it has counted `sent` records and closed the hour."""
    monitor = Monitor(settings, group=group, batch_size=args.batch_size)
    end = 1_772_366_400_000_000 + HOUR_US
    first: list[float] = []
    began = time.perf_counter()

    def done(m: Monitor) -> bool:
        if time.perf_counter() - began > args.timeout:
            raise RuntimeError(
                f"the monitor did not finish within {args.timeout:g}s: {m.counters}, closed "
                f"through {m.closed}"
            )
        if not first and m.counters.consumed:
            # The clock starts when the first batch began, not when the group was joined.
            first.append(time.perf_counter() - m.counters.batch_seconds)
        return m.counters.consumed >= sent and m.closed is not None and m.closed >= end

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    meter = Meter(meter_cpu, args.wait_quiet)
    try:
        monitor.run(until=done)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    seconds = time.perf_counter() - first[0]
    load = meter.stop()
    counters = monitor.counters
    log(f"monitor {group}: {counters.counted / seconds:,.0f} predictions/s; {counters}")
    return {
        "seconds": round(seconds, 3),
        "predictions_per_s": round(counters.counted / seconds) if seconds else None,
        "counted": counters.counted,
        "late": counters.late,
        "windows_closed": counters.windows_closed,
        "drift_records": counters.records,
        "alerts": counters.alerts,
        "batches": counters.batches,
        "batch_seconds": round(counters.batch_seconds, 3),
        "load": load,
    }


def topic_size(settings: Settings, topic: str) -> int:
    """Messages on `topic` now (high minus low watermark over its partitions)."""
    consumer = Consumer(settings.kafka.client_config(**{"group.id": f"size-{uuid.uuid4().hex}"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


# -- 2. serving with the prediction log on and off -----------------------------------------------


def measure_serving(
    args: argparse.Namespace,
    services: Services,
    settings: Settings,
    work: Path,
    children: list[Child],
) -> dict[str, Any]:
    topic = f"{settings.serving.prediction_log_topic}.serve-events"
    rng = np.random.default_rng(args.seed)
    users = [f"u{i:05d}" for i in range(args.users)]
    log(f"serving: ingesting {args.events:,} events of {args.users:,} users")
    events = generate_events(args.events, args.users, args.seed)
    ingested = ingest(settings, topic, events)
    names, matrix, _as_of = feature_matrix(settings, users)
    booster, metrics = train_serving_model(matrix, names, args.trees, args.train_rows, args.seed)
    register_serving_model(
        settings.models, bench_serving.MODEL, booster, names, {"auc": metrics["auc"]}
    )
    floor_prefix = f"{settings.redis.namespace}-floor"
    write_floor(settings.redis.url, floor_prefix, users, matrix)
    targets = {}
    for name, log_topic in (("on", settings.serving.prediction_log_topic), ("off", "")):
        folder = work / f"serve-log-{name}"
        folder.mkdir()
        (folder / "model.txt").write_text(booster.model_to_string())
        serving = settings.serving.model_copy(update={"prediction_log_topic": log_topic})
        ours, _floor = bench_serving.start_servers(
            settings.model_copy(update={"serving": serving}),
            folder,
            children,
            floor_prefix,
            len(names),
        )
        targets[name] = ours
    body = targets["on"].body([users[int(rng.integers(len(users)))]])
    for target in targets.values():  # warm both up
        hey(target.url, body, seconds=args.warmup, concurrency=args.concurrency)
    rps: dict[str, list[float]] = {"on": [], "off": []}
    rounds = []
    for i in range(args.rounds):
        order = ["on", "off"] if i % 2 == 0 else ["off", "on"]
        for name in order:
            target = targets[name]
            meter = Meter(
                lambda t=target: {**server_cpu(services), "server": t.child.cpu_seconds()},
                args.wait_quiet,
            )
            got = hey(target.url, body, seconds=args.seconds, concurrency=args.concurrency)
            rps[name].append(got["rps"] or 0.0)
            rounds.append(
                {
                    "log": name,
                    **{k: got[k] for k in ("rps", "p50_ms", "p99_ms", "non_200", "statuses")},
                    "load": meter.stop(),
                }
            )
            log(f"log {name}: {got['rps']} req/s, p99 {got['p99_ms']} ms, non-200 {got['non_200']}")
    on, off = statistics.median(rps["on"]), statistics.median(rps["off"])
    return {
        "ingest": ingested,
        "rounds": rounds,
        "serving_rps_log_on": round(on, 1),
        "serving_rps_log_off": round(off, 1),
        "log_on_vs_off": ratio(on, off),
        "non_200": sum(r["non_200"] for r in rounds),
        "statuses": dict(sum((Counter(r["statuses"]) for r in rounds), Counter())),
        "log_records": topic_size(settings, settings.serving.prediction_log_topic),
    }


# -- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    with working_folder("fstore-bench-monitor-", args.tmp, args.keep) as work:
        return run_in(args, work)


def run_in(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    services = start_services(work / "services")
    namespace = f"bench-monitor-{run_id}"
    predictions = f"bench.monitor.predictions.{run_id}"
    monitor = MonitorSettings(
        drift_topic=f"bench.monitor.drift.{run_id}",
        alerts_topic=f"bench.monitor.alerts.{run_id}",
        labels_topic="",
    )
    children: list[Child] = []
    topics = [
        predictions,
        f"{predictions}.labels",
        monitor.drift_topic,
        f"{monitor.drift_topic}.2",
        monitor.alerts_topic,
    ]
    try:
        settings = run_settings(
            services,
            work,
            namespace,
            serving=ServingSettings(host="127.0.0.1", prediction_log_topic=predictions),
            monitor=monitor,
        )
        info = machine(**services_versions(services))
        log(f"machine: {info}; working in {work}")
        result: dict[str, Any] = {"machine": info}
        result["throughput"] = measure_monitor(args, settings, lambda: server_cpu(services))
        result["predictions_per_s"] = result["throughput"]["predictions_per_s"]
        result["predictions_per_s_label_index"] = (
            result["throughput"].get("label_index", {}).get("predictions_per_s")
        )
        serving_topic = f"bench.monitor.serving.{run_id}"
        topics += [serving_topic, f"{serving_topic}.serve-events"]
        serving_settings = settings.model_copy(
            update={
                "serving": settings.serving.model_copy(
                    update={"prediction_log_topic": serving_topic}
                )
            }
        )
        try:
            served = measure_serving(args, services, serving_settings, work, children)
        except Exception as exc:  # noqa: BLE001 - the figures so far still print; exit 1
            log(f"the serving measurement failed: {exc}")
            served = {
                "serving_rps_log_on": None,
                "serving_rps_log_off": None,
                "log_on_vs_off": None,
                "reason": f"the serving app could not be measured: {exc}",
            }
        result["serving"] = served
        for key in ("serving_rps_log_on", "serving_rps_log_off", "log_on_vs_off"):
            result[key] = served.get(key)
        result["goals_met"] = {
            key: None if result.get(key) is None else bool(result[key] >= goal)
            for key, goal in GOALS.items()
        }
        return result
    finally:
        for child in children:
            child.stop()
        cleanup_services(services, topics, [namespace, f"{namespace}-floor"])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=20_000, help="monitor batch")
    parser.add_argument(
        "--no-label-index",
        dest="label_index",
        action="store_false",
        help="skip the second pass, with the label join's prediction index",
    )
    parser.add_argument("--users", type=int, default=10_000, help="serving: users")
    parser.add_argument("--events", type=int, default=200_000, help="serving: events ingested")
    parser.add_argument("--trees", type=int, default=200, help="serving: model trees")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=15.0, help="serving: per round")
    parser.add_argument("--rounds", type=int, default=4, help="serving: rounds per server")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32, help="hey workers")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the monitor may take")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.predictions, args.users, args.events, args.train_rows = 20_000, 300, 5_000, 2_000
        args.trees, args.seconds, args.rounds, args.warmup, args.concurrency = 20, 1.0, 2, 0.5, 8
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    result = run(args)
    print(
        f"monitor: {show(result['predictions_per_s'])} predictions/s "
        f"(goal {GOALS['predictions_per_s']:,}); serving req/s with the log on "
        f"{show(result['serving_rps_log_on'])}, off {show(result['serving_rps_log_off'])} "
        f"({show(result['log_on_vs_off'], 'x')}, goal {GOALS['log_on_vs_off']}x)"
    )
    print(json.dumps(result), flush=True)
    # The figures that were measured are printed, but a run with a part that failed is a failed
    # run (and fails the --quick test that runs it): never a success with a reason attached.
    if reason := result["serving"].get("reason"):
        sys.exit(f"monitor: {reason}")


if __name__ == "__main__":
    main(sys.argv[1:])
