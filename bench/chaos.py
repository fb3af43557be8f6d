"""Chaos benchmark: ingest and serve through every fault issue 18 names, then count what was lost.

One run: `--events` good events of `--users` users (event times over the last `--hours`),
with a poison message of every kind mixed in after every `--poison-every` of them (malformed
JSON, missing fields, wrong types, 2^53 + 1 in a float64 column and 2^63 in an int64 one,
times past the range, epoch ms where the event time is usually text, events from the future,
~1 MB messages), produced to Kafka at `--rate` messages/s. Meanwhile `fstore ingest` (one
worker) consumes them and `fstore serve` scores `/v1/predict` for a small LightGBM model of
the view, under `--background-rate` req/s throughout; and the script, at even intervals in a
shuffled order, each fault once the worker has applied something since the one before:

- restarts Redis without its data (`--wipes`; the worker must rebuild from the offline log),
- restarts Redis with its append-only file (`--aof-restarts`),
- restarts the Kafka broker (`--kafka-restarts`),
- SIGKILLs the worker, mostly in the middle of a batch (`--kills`),
- SIGSTOPs Redis for `--stall-seconds` (`--stalls`) under `--stall-rate` req/s of
  `/v1/predict` (from `--stall-seconds` before to `--stall-seconds` after).

A worker that exits by itself is a consumer crash: counted, and started again. Once the worker
has consumed every message, every feature of every user is read from Redis (at the newest
event, and 30 minutes later) and compared with a brute-force computation over the accepted
events; the offline log with the accepted set, row by row; the dead-letter topic with the
poison sent, reason by reason; and `/v1/predict` answers for a sample of users with the
brute-force features and the model's own scores.

Kafka and Redis are always the run's own, on free ports (FSTORE_KAFKA_BOOTSTRAP and
FSTORE_REDIS_URL are ignored: this run restarts and wipes them). Progress goes to stderr; the
last line on stdout is one JSON object.

    python bench/chaos.py            # the full run (about 10 minutes on 2 cores)
    python bench/chaos.py --quick    # one fault of each kind, a few thousand events (~2 min)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import yaml
from _cli import add_common_arguments, working_folder
from _machine import Meter, machine
from _report import log, show
from _services import (
    Services,
    cleanup_services,
    register_views,
    run_settings,
    server_cpu,
    services_versions,
    start_services,
)
from chaos_check import (
    accepted_events,
    check_dead_letters,
    check_offline_log,
    check_online_values,
    expected_features,
)
from chaos_faults import Breakable, Load, Supervised, summarize_load
from chaos_stream import MAX_MESSAGE_BYTES, Publisher, make_stream, make_view
from serving_workload import post

from featurestore.config import ServingSettings, Settings
from featurestore.definitions import FeatureView
from featurestore.models.registry import (
    PRODUCTION,
    DatasetRef,
    FeatureSpec,
    ModelRegistry,
    Objective,
    Signature,
)
from featurestore.online import OnlineStore
from featurestore.services import free_port
from streaming.topics import ensure_topic

HERE = Path(__file__).resolve().parent
VIEW = "chaos"
MODEL = "chaos_model"
HOST = "127.0.0.1"
WHO = "bench/chaos.py"
PARTITIONS = 3


def run(args: argparse.Namespace) -> dict[str, Any]:
    with working_folder("fstore-bench-chaos-", args.tmp, args.keep) as work:
        return run_in(args, work)


def run_in(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    services = start_services(work / "services", borrow=False)
    topic = f"bench.chaos.{run_id}"
    processes: list[Supervised] = []
    try:
        settings = run_settings(
            services,
            work,
            f"bench-chaos-{run_id}",
            serving=ServingSettings(host=HOST, prediction_log_topic=f"{topic}.predictions"),
        )
        return storm(args, services, settings, work, topic, processes)
    finally:
        for process in processes:
            process.stop()
        cleanup_services(services, [], [])


def storm(
    args: argparse.Namespace,
    services: Services,
    settings: Settings,
    work: Path,
    topic: str,
    processes: list[Supervised],
) -> dict[str, Any]:
    info = machine(**services_versions(services))
    log(f"machine: {info}; working in {work}")
    broken = Breakable(services)
    view = make_view(VIEW, topic)
    register_views(settings.registry, view)
    ensure_topic(
        settings.kafka, topic, PARTITIONS, config={"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    )
    stream = make_stream(
        args.events, args.users, args.poison_every, args.oversized, args.hours, args.seed
    )
    log(f"{len(stream.payloads):,} messages: {args.events:,} events, {stream.poison:,} poison")
    booster = train_and_register(settings, view, args.seed)

    config = work / "featurestore.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env["FSTORE_CONFIG"] = str(config)
    # The code of this checkout, whatever the virtualenv was installed from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    fstore = str(Path(sys.executable).parent / "fstore")
    port = free_port()
    url = f"http://{HOST}:{port}/v1/predict/{MODEL}"
    body = json.dumps({"entities": {"user_id": ["u00001"]}}).encode()
    server = Supervised(
        "fstore serve",
        [fstore, "serve", "--host", HOST, "--port", str(port)],
        work,
        env,
        ready=lambda: post(url, body, timeout=2)[0] == 200,
    )
    worker = Supervised(
        "fstore ingest",
        [fstore, "ingest", "--group", f"{topic}.ingest", "--instance-id", f"{topic}.worker"],
        work,
        env,
    )
    processes += [server, worker]
    server.start()
    worker.start()

    faults = (
        ["wipe"] * args.wipes
        + ["aof"] * args.aof_restarts
        + ["kafka"] * args.kafka_restarts
        + ["kill"] * args.kills
        + ["stall"] * args.stalls
    )
    rng = random.Random(args.seed)  # noqa: S311 - a reproducible schedule, not a secret
    rng.shuffle(faults)
    publisher = Publisher(settings.kafka, topic, stream, args.rate)
    store = OnlineStore(settings.redis)
    meter = Meter(lambda: server_cpu(services))
    loads: list[Load] = []
    began = time.monotonic()
    publisher.start()
    log(f"publishing at {args.rate:g}/s for ~{len(stream.payloads) / args.rate:.0f}s")
    background = Background(url, body, args.background_rate)
    background.start()
    timeline: list[dict[str, Any]] = []
    spacing = len(stream.payloads) / args.rate / (len(faults) + 1)
    for i, fault in enumerate(faults):
        due = began + (i + 1) * spacing
        since = applied(store, view)
        while time.monotonic() < due or (applied(store, view) or 0) <= (since or 0):
            worker.check()
            server.check()
            time.sleep(0.2)
            if time.monotonic() > due + 120:
                log(f"no progress in 120 s before {fault}; injecting it anyway")
                break
        at = round(time.monotonic() - began, 1)
        seconds = inject(fault, broken, worker, store, view, rng, args, url, body, loads)
        timeline.append({"fault": fault, "at_s": at, "seconds": round(seconds, 1)})
        log(f"{at:7.1f}s {fault}: {seconds:.1f}s")
    publisher.finish(900)
    ends = last_offsets(publisher)
    log("every message delivered; waiting for the worker to consume them all")
    deadline = time.monotonic() + args.catch_up
    while not caught_up(store, view, ends):
        worker.check()
        server.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not catch up within {args.catch_up:g} s")
        time.sleep(0.5)
    storm_seconds = time.monotonic() - began
    worker_exit = worker.stop()
    answered = [background.finish(), *(load.result() for load in loads)]
    load_figures = summarize_load(answered, broken.stalls)
    # Every request's (sent, seconds, status), and the stalls, for a look with --keep.
    (work / "requests.json").write_text(
        json.dumps({"stalls": broken.stalls, "rows": [r for _, rows in answered for r in rows]})
    )

    log("checking the online values, the offline log and the dead letters")
    accepted = accepted_events(stream, publisher.partition, publisher.offset, view.lateness_us)
    newest = int(accepted.ts_us.max())
    online = [
        check_online_values(settings, view, 1, accepted, args.users, newest + later * 60_000_000)
        for later in (0, 30)
    ]
    offline = check_offline_log(settings, view.name, 1, accepted)
    dead = check_dead_letters(
        settings.kafka, topic, stream, publisher.partition, publisher.offset, accepted
    )
    scores = check_scores(url, view, booster, accepted, args.users, args.check_users, args.seed)
    logs = worker.logs()
    result: dict[str, Any] = {
        "machine": info,
        "events": args.events,
        "users": args.users,
        "messages": len(stream.payloads),
        "poison_messages": stream.poison,
        "poison_kinds": len(set(k for k, r in zip(stream.kind, stream.reason, strict=True) if r)),
        "accepted": len(accepted.seq),
        "late": accepted.late,
        **dead,
        **{k: v for k, v in offline.items() if k in ("lost", "duplicated")},
        "wrong_values": sum(o["wrong_values"] for o in online),
        "values_compared": sum(o["values_compared"] for o in online),
        "wrong_statuses": sum(o["wrong_statuses"] for o in online),
        "wrong_examples": [e for o in online for e in o["wrong_examples"]][:5],
        "log_wrong": offline["log_wrong"],
        "log_unexpected": offline["log_unexpected"],
        "log_rows": offline["log_rows"],
        "log_rows_on_disk": offline["log_rows_on_disk"],
        "consumer_crashes": worker.crashes,
        "server_crashes": server.crashes,
        "worker_exit_code": worker_exit,
        "state_rebuilds": logs.count("online state rebuilt from the offline log"),
        "redis_restarts": broken.redis_restarts,
        "redis_wipes": broken.redis_wipes,
        "redis_stalls": broken.redis_stalls,
        "kafka_restarts": broken.kafka_restarts,
        "worker_kills": worker.kills,
        **load_figures,
        "redis_deadline_ms": settings.serving.redis_deadline_ms,
        **scores,
        "timeline": timeline,
        "storm_seconds": round(storm_seconds, 1),
        "load": meter.others(),
        "crash_logs": worker.crash_logs + server.crash_logs,
    }
    result["goals_met"] = goals_met(result)
    return result


class Background:
    """Steady `/v1/predict` load in rounds of 10 s until told to finish."""

    def __init__(self, url: str, body: bytes, rate: float) -> None:
        self.url, self.body, self.rate = url, body, rate
        self.loads: list[Load] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="background load", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping and self.rate > 0:
            load = Load(self.url, self.body, self.rate, 10.0, processes=1, workers=8)
            self.loads.append(load)
            load.start()
            load.join()

    def finish(self) -> tuple[int, list[tuple[float, float, str]]]:
        self.stopping = True
        self.thread.join(180)
        results = [load.result() for load in self.loads]
        return sum(n for n, _ in results), [row for _, rows in results for row in rows]


def inject(
    fault: str,
    broken: Breakable,
    worker: Supervised,
    store: OnlineStore,
    view: FeatureView,
    rng: random.Random,
    args: argparse.Namespace,
    url: str,
    body: bytes,
    loads: list[Load],
) -> float:
    """One fault; the seconds it took."""
    began = time.perf_counter()
    if fault == "wipe":
        broken.restart_redis(wipe=True)
    elif fault == "aof":
        broken.restart_redis(wipe=False)
    elif fault == "kafka":
        broken.restart_kafka()
    elif fault == "kill":
        # Mostly amid a batch: once this life has applied something and has more to go.
        since = applied(store, view)
        end = time.monotonic() + 3
        while (applied(store, view) or 0) <= (since or 0) and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))
        worker.kill()
    elif fault == "stall":
        stall = args.stall_seconds
        load = Load(url, body, args.stall_rate, 3 * stall, processes=10, workers=15)
        loads.append(load)
        load.start()
        time.sleep(stall)
        broken.stall_redis(stall)
        load.join(3 * stall + 60)
    else:
        raise ValueError(fault)
    return time.perf_counter() - began


def applied(store: OnlineStore, view: FeatureView) -> int | None:
    """Offsets the view's stored positions cover, over all partitions (None: Redis is down)."""
    try:
        return sum(p.offset + 1 for p in store.positions(view.name, 1).values())
    except Exception:  # noqa: BLE001 - Redis restarting or stopped: no figure now
        return None


def last_offsets(publisher: Publisher) -> dict[int, int]:
    ends: dict[int, int] = {}
    for p, o in zip(publisher.partition.tolist(), publisher.offset.tolist(), strict=True):
        ends[p] = max(ends.get(p, -1), o)
    return ends


def caught_up(store: OnlineStore, view: FeatureView, ends: dict[int, int]) -> bool:
    try:
        positions = store.positions(view.name, 1)
    except Exception:  # noqa: BLE001 - Redis restarting: not yet
        return False
    return all(p in positions and positions[p].offset >= end for p, end in ends.items())


def train_and_register(settings: Settings, view: FeatureView, seed: int) -> lgb.Booster:
    """A small LightGBM model of every feature of the view, on random rows of plausible values
    (for load, not for quality), registered and promoted to production."""
    names = view.feature_names()
    rng = np.random.default_rng(seed)
    rows = 2_000
    x = rng.gamma(2.0, 25.0, (rows, len(names))) * rng.integers(1, 50, (rows, 1))
    y = (x @ rng.normal(0, 1, len(names)) + rng.normal(0, x.std(), rows) > 0).astype(np.int8)
    columns = [f"{VIEW}__{n}" for n in names]
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=columns), num_boost_round=30)
    registry = ModelRegistry(settings.models)
    text = booster.model_to_string()
    registered = registry.register(
        MODEL,
        text,
        objective=Objective.BINARY,
        signature=Signature(
            features=tuple(
                FeatureSpec(ref=f"{VIEW}@1:{n}", name=c)
                for n, c in zip(names, columns, strict=True)
            ),
            entity_keys=("user_id",),
        ),
        label="random",
        dataset=DatasetRef("random-rows", 1, hashlib.sha256(text.encode()).hexdigest()),
        views={VIEW: 1},
        params={"num_boost_round": 30},
        metrics={"auc": 0.5},  # not measured: the model is for load only
        primary_metric="auc",
        profile={},
        who=WHO,
        description="bench/chaos.py: random rows, for load only",
    )
    registry.set_alias(MODEL, PRODUCTION, registered.version, who=WHO, reason="benchmark run")
    return booster


def check_scores(
    url: str,
    view: FeatureView,
    booster: lgb.Booster,
    accepted: Any,
    users: int,
    sample: int,
    seed: int,
) -> dict[str, Any]:
    """After the storm, `/v1/predict` for a sample of users: its features against the brute
    force at the moment of the request, and its scores against the model's on them. Asked
    again when a minute edge passed during the request (the windows moved)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(users, min(sample, users), replace=False))
    names = view.feature_names()
    request = {"entities": {"user_id": [f"u{u:05d}" for u in chosen.tolist()]}}
    request["return_features"] = True  # type: ignore[assignment]
    for _attempt in range(3):
        before = time.time_ns() // 1000
        status, answer = post(url, json.dumps(request).encode(), timeout=30)
        after = time.time_ns() // 1000
        if status != 200:
            return {"scores_checked": 0, "scores_wrong": None, "features_wrong": None,
                    "scores_check_status": status}  # fmt: skip
        if before // 60_000_000 != after // 60_000_000:
            continue
        want = expected_features(view, accepted, chosen, after)
        got = np.array(
            [
                [np.nan if v is None else v for v in answer["features"][f"{VIEW}__{n}"]]
                for n in names
            ]
        ).T
        expected = np.array([want[n] for n in names]).T
        features_wrong = int(
            (~np.isclose(got, expected, rtol=1e-9, atol=1e-9, equal_nan=True)).sum()
        )
        scored = np.array([np.nan if s is None else s for s in answer["scores"]])
        model = booster.predict(got)
        scores_wrong = int((~np.isclose(scored, model, rtol=1e-9, atol=1e-12)).sum())
        return {"scores_checked": len(chosen), "scores_wrong": scores_wrong,
                "features_wrong": features_wrong, "scores_check_status": status}  # fmt: skip
    return {"scores_checked": 0, "scores_wrong": None, "features_wrong": None,
            "scores_check_status": "a minute edge passed during every attempt"}  # fmt: skip


GOALS = {
    "lost": 0,
    "duplicated": 0,
    "wrong_values": 0,
    "wrong_statuses": 0,
    "consumer_crashes": 0,
    "responses_5xx": 0,
    "dead_letters_missing": 0,
    "dead_letters_wrong_reason": 0,
    "scores_wrong": 0,
    "features_wrong": 0,
}


def goals_met(result: dict[str, Any]) -> dict[str, bool]:
    goals = {key: result.get(key) == want for key, want in GOALS.items()}
    p99 = result.get("p99_ms_503_during_redis_stall")
    goals["p99_ms_503_during_redis_stall"] = p99 is not None and p99 < 1000
    goals["every_poison_in_dlq"] = (
        result["dead_letters_missing"] == 0 and result["poison_messages"] > 0
    )
    return goals


def print_summary(result: dict[str, Any]) -> None:
    keys = [
        "events", "poison_messages", "dead_lettered", "lost", "duplicated", "wrong_values",
        "values_compared", "consumer_crashes", "redis_restarts", "redis_wipes", "state_rebuilds",
        "kafka_restarts", "worker_kills", "redis_stalls", "requests", "responses_5xx",
        "responses_503", "no_response", "p99_ms_503_during_redis_stall", "scores_wrong",
    ]  # fmt: skip
    for key in keys:
        print(f"{key:<32} {show(result.get(key)):>12}")
    for key, met in result["goals_met"].items():
        print(f"goal {key:<40} {'met' if met else 'MISSED'}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one fault of each kind, small")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--hours", type=float, default=2.0, help="event times span this much")
    parser.add_argument("--poison-every", type=int, default=100, help="good events per poison")
    parser.add_argument("--oversized", type=int, default=3, help="~1 MB poison messages")
    parser.add_argument("--rate", type=float, default=1_000.0, help="messages/s produced")
    parser.add_argument("--wipes", type=int, default=3, help="Redis restarts without its data")
    parser.add_argument("--aof-restarts", type=int, default=3, help="Redis restarts with AOF")
    parser.add_argument("--kafka-restarts", type=int, default=2)
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of the worker")
    parser.add_argument("--stalls", type=int, default=2, help="SIGSTOPs of Redis")
    parser.add_argument("--stall-seconds", type=float, default=5.0)
    parser.add_argument("--stall-rate", type=float, default=500.0, help="req/s around a stall")
    parser.add_argument("--background-rate", type=float, default=20.0, help="req/s throughout")
    parser.add_argument(
        "--check-users", type=int, default=200, help="users whose scores are checked"
    )
    parser.add_argument(
        "--catch-up", type=float, default=600.0, help="s the worker may take at the end"
    )
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.users, args.rate, args.poison_every = 6_000, 200, 250.0, 150
        args.oversized, args.wipes, args.aof_restarts, args.kafka_restarts = 1, 1, 1, 1
        args.kills, args.stalls, args.stall_seconds, args.stall_rate = 2, 1, 2.0, 100.0
        args.background_rate, args.check_users = 10.0, 50
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    result = run(args)
    print_summary(result)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
