"""Serving benchmark: `POST /v1/predict` against a bare floor and Feast's feature server.

Workload: `--users` users with `--events` events over the last 24 hours (wall-clock times),
produced to Kafka and ingested into Redis by the streaming worker, the product's own path. The
view has count / sum / mean / max of `amount` over 10m, 1h and 24h (12 features). A LightGBM
model of `--trees` trees (no early stopping) is trained on random rows of those 12 features,
registered and promoted to production in the run's model registry. Three servers run side by
side, each in a process of its own with one uvicorn worker:

1. ours  - `fstore serve`: `POST /v1/predict/{model}` reads the features from the online store
   and scores them (prediction log to Kafka on, as shipped);
2. floor - bench/serving_floor.py, a bare ASGI app: one HMGET of a plain hash holding the same
   12 values (written by this script from our online store) and one predict of the same model;
3. Feast (its own virtualenv; off with --no-feast, and in --quick unless --feast) - `feast
   serve` on the same Redis (database `--feast-db`) serving the same 12 values, materialized
   into its online store. It only reads features; it does not score. By default it runs
   without gunicorn's worker recycling (spared the restarts); a second `feast serve` as it
   ships (recycling every 1,000 requests, Feast's default) takes the single-entity saturated
   point too (off with --no-feast-shipped).

With `--on-demand`, ours also serves a second model (ours_od, same server, same trees) that
reads the 12 features and two request-time features computed from fields of each request
(bench/serving_on_demand.py): the cost of on-demand features is `rps_od_vs_plain_saturated`,
the two models taking turns at each point (goal: at least 0.9, i.e. at most 10%).

With `--redis-cluster N`, a third `fstore serve` (ours_cluster) reads the same events from a
local Redis Cluster of N masters (ingested there by a second worker from the same topic), on a
copy of the registry: the cost of the cluster is `p99_cluster_vs_single_<R>rps` (goal: at most
1.3) and `rps_cluster_vs_single_saturated`, the servers taking turns at each point.

With `--keys`, a second `fstore serve` (ours_keyed) runs on a copy of the registry holding one
API key (scope `predict:<model>`), and every request to it carries that key: the cost of keys
is `rps_keyed_vs_open_saturated`, the two taking turns at each point like the others (goal:
at least 0.95, i.e. keys cost at most 5% of saturated throughput).

Load: `hey` (Debian's package) from this machine; single entity and a batch of `--batch`
users, each at every rate of `--rates` req/s and saturated (`--concurrency` workers, no rate
limit; `--rounds` times, the figures being the medians). hey sends one body over and over:
single-entity points ask for one user (no server caches results, so a repeated user costs what
any user costs). The servers take turns at each point, so they meet the same conditions; a
warm-up precedes each shape. Every response's status is counted, and requests hey got no
answer to. Each point records the CPU of each server, of Redis and of Kafka, and what other
processes on the machine took meanwhile (`load`).

Kafka and Redis are started here on free ports unless FSTORE_KAFKA_BOOTSTRAP / FSTORE_REDIS_URL
name running ones. Progress goes to stderr; the last line on stdout is one JSON object.

    python bench/serving.py            # the full run (10-15 minutes on 2 cores)
    python bench/serving.py --quick    # tiny, under a minute (no Feast unless --feast)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import yaml
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
from feast_serving import (
    drop_feast_keys,
    feast_body,
    feast_values,
    setup_feast,
    start_feast,
    write_values,
)
from serving_on_demand import (
    ON_DEMAND_MODEL,
    on_demand_columns,
    on_demand_differ,
    register_on_demand,
    request_fields,
)
from serving_workload import (
    VIEW,
    apply_topic,
    compare_scores,
    feature_matrix,
    generate_events,
    ingest,
    post,
    register_model,
    train_model,
    values_wrong,
    write_floor,
)

from featurestore.api_keys import KeyStore
from featurestore.config import (
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    ServingSettings,
    Settings,
)
from featurestore.services import free_port
from featurestore.services.redis_cluster import RedisCluster, free_ports

HERE = Path(__file__).resolve().parent
MODEL = "bench_model"
HOST = "127.0.0.1"
GOALS = {
    "p99_vs_floor": 1.3,
    "rps_vs_floor_saturated": 0.7,
    "rps_vs_feast_saturated": 6.0,
    "rps_keyed_vs_open_saturated": 0.95,
    "rps_od_vs_plain_saturated": 0.9,
    "p99_cluster_vs_single": 1.3,
}
PREFIXES = {
    "ours": "",
    "ours_keyed": "keyed_",
    "floor": "floor_",
    "feast": "feast_",
    "feast_shipped": "feast_shipped_",
    "ours_od": "od_",
    "ours_cluster": "cluster_",
}
# `feast serve` recycles its worker every 1,000 requests (+ up to 50) unless told otherwise.
FEAST_DEFAULT_MAX_REQUESTS = 1000


@dataclass
class Target:
    """A server under load: where to POST, and the body for a list of users."""

    name: str
    child: Child
    url: str
    feast_view: str | None = None  # Feast's requests name the features; the others the model
    feature_names: tuple[str, ...] = ()
    saturated_single_only: bool = False  # measured at the single-entity saturated point only
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (an API key)
    request: bool = False  # send the on-demand features' request fields

    def body(self, users: list[str]) -> bytes:
        if self.feast_view is not None:
            return feast_body(self.feast_view, list(self.feature_names), users)
        if self.request:
            body = {"entities": {"user_id": users}, "request": request_fields(len(users))}
            return json.dumps(body).encode()
        return json.dumps({"entities": {"user_id": users}}).encode()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with working_folder("fstore-bench-serve-", args.tmp, args.keep) as work:
        return run_in(args, work)


def run_in(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    services = start_services(work / "services")
    topic, predictions = f"bench.serve.{run_id}", f"bench.predictions.{run_id}"
    namespace, floor_prefix = f"bench-serve-{run_id}", f"bench-floor-{run_id}"
    project = f"fstore_serving_bench_{run_id}"
    children: list[Child] = []
    cluster = None
    if args.redis_cluster:
        cluster = RedisCluster(work / "cluster", free_ports(args.redis_cluster), args.redis_cluster)
        log(f"starting a Redis Cluster of {args.redis_cluster} masters at {cluster.url}")
        cluster.start()
    try:
        settings = run_settings(
            services,
            work,
            namespace,
            serving=ServingSettings(host=HOST, prediction_log_topic=predictions),
        )
        return measure(
            args, services, settings, work, children, topic, floor_prefix, project, cluster
        )
    finally:
        for child in children:
            child.stop()
        if cluster is not None:
            cluster.stop()
        if args.feast:
            drop_feast_keys(services.redis_url, args.feast_db, project)
        cleanup_services(services, [topic, predictions], [namespace, floor_prefix])


def measure(
    args: argparse.Namespace,
    services: Services,
    settings: Settings,
    work: Path,
    children: list[Child],
    topic: str,
    floor_prefix: str,
    project: str,
    cluster: RedisCluster | None = None,
) -> dict[str, Any]:
    info = machine(
        **services_versions(services),
        **{name: version(name) for name in ("lightgbm", "fastapi", "uvicorn")},
    )
    log(f"machine: {info}; working in {work}")
    result: dict[str, Any] = {
        "machine": info,
        "users": args.users,
        "events": args.events,
        "trees": args.trees,
        "batch": args.batch,
        "rates": args.rates,
        "seconds_per_point": args.seconds,
        "concurrency_saturated": args.concurrency,
    }
    rng = np.random.default_rng(args.seed)
    users = [f"u{i:05d}" for i in range(args.users)]

    log(f"ingesting {args.events:,} events of {args.users:,} users through Kafka and the worker")
    events = generate_events(args.events, args.users, args.seed)
    result["ingest"] = ingest(settings, topic, events)
    log(f"ingest: {result['ingest']}")

    # The floor's hashes and Feast's rows hold what our online store serves at this moment.
    names, matrix, as_of_ms = feature_matrix(settings, users)
    sample = sorted(rng.choice(args.users, min(args.check_users, args.users), replace=False))
    result["features_wrong"] = values_wrong(events, names, matrix, as_of_ms, sample)
    write_floor(settings.redis.url, floor_prefix, users, matrix)

    booster, metrics = train_model(matrix, names, args.trees, args.train_rows, args.seed)
    (work / "model.txt").write_text(booster.model_to_string())
    result["model"] = {"trees": booster.num_trees(), **metrics}
    result["model_version"] = register_model(
        settings.models, MODEL, booster, names, {"auc": metrics["auc"]}
    )
    log(f"model: {result['model']}, registered as {MODEL}@{result['model_version']}")
    if args.on_demand:
        specs = register_on_demand(settings)
        fields = request_fields(len(matrix))
        wide = np.hstack([matrix, on_demand_columns(names, matrix, fields)])
        od_booster, od_metrics = train_model(
            wide, names + [name for _, name in specs], args.trees, args.train_rows, args.seed
        )
        result["on_demand_model"] = {"trees": od_booster.num_trees(), **od_metrics}
        register_model(
            settings.models, ON_DEMAND_MODEL, od_booster, names, {"auc": od_metrics["auc"]}, specs
        )
        log(f"on-demand model: {result['on_demand_model']}, registered as {ON_DEMAND_MODEL}")

    targets = start_servers(settings, work, children, floor_prefix, len(names))
    if args.on_demand:
        ours = targets[0]
        url = ours.url.replace(f"/v1/predict/{MODEL}", f"/v1/predict/{ON_DEMAND_MODEL}")
        od_target = Target("ours_od", ours.child, url, request=True)
        wait_ready(od_target, users[0])
        targets.insert(1, od_target)
        checked_od = [users[i] for i in sample]
        for _attempt in range(3):  # again when a window edge passed between read and request
            _, now_matrix, _ = feature_matrix(settings, checked_od)
            fields = request_fields(len(checked_od))
            expected = on_demand_columns(names, now_matrix, fields)
            result["on_demand_differ"] = on_demand_differ(url, checked_od, expected)
            if result["on_demand_differ"] == 0:
                break
        log(f"check: on-demand outputs differ {result['on_demand_differ']}")
    if args.keys:
        targets.insert(1, start_keyed(settings, work, children))
    if cluster is not None:
        on_cluster = cluster_settings(settings, cluster, work)
        log(f"ingesting the same events into the Redis Cluster at {cluster.url}")
        result["ingest_cluster"] = apply_topic(on_cluster, topic, result["ingest"]["produced"])
        target = start_copy("ours_cluster", on_cluster, work, children)
        targets.insert(1, target)
        checked_cluster = [users[i] for i in sample]
        differ = scores_differ(targets[0].url, target.url, checked_cluster)
        result["cluster_scores_differ"] = differ
        log(f"check: scores differ between one Redis and the cluster: {differ}")
    if args.feast:
        values = work / "feast-values.parquet"
        write_values(values, users, names, matrix)
        log(f"Feast: materializing {len(users):,} rows into Redis db {args.feast_db}")
        result["feast_setup"] = setup_feast(
            work / "feast-repo", settings.redis.url, args.feast_db, project, VIEW, values
        )
        # Feast as the run sets it (--feast-max-requests; by default it never recycles its
        # worker, which spares it the restarts) and, for the saturated single-entity point, as
        # it ships: `feast serve` with its default recycling, as the 445 req/s was taken.
        feasts = [("feast", args.feast_max_requests, False)]
        if args.feast_shipped:
            feasts.append(("feast_shipped", FEAST_DEFAULT_MAX_REQUESTS, True))
        for name, max_requests, only_saturated in feasts:
            port = free_port()
            child = start_feast(work / "feast-repo", HOST, port, max_requests, work / f"{name}.log")
            children.append(child)
            url = f"http://{HOST}:{port}/get-online-features"
            target = Target(name, child, url, VIEW, tuple(names), only_saturated)
            wait_ready(target, users[0])
            targets.append(target)

    # Ours and the floor score the same users alike; Feast returns the values the others use.
    checked = [users[i] for i in sample]
    by_name = {target.name: target for target in targets}
    result["scores_differ"] = compare_scores(
        settings, floor_prefix, by_name["ours"].url, by_name["floor"].url, checked
    )
    if args.feast:
        feast = next(target for target in targets if target.name == "feast")
        result["feast_values_differ"] = feast_differ(feast, checked, matrix, sample)
    log(
        f"checks: features wrong {result['features_wrong']}, scores differ "
        f"{result['scores_differ']}, Feast values differ {result.get('feast_values_differ')}"
    )

    points = load_points(args, services, targets, users, rng)
    result["points"] = points
    result.update(figures(args, points, [t.name for t in targets]))
    result["goals_met"] = goals_met(args, result)
    return result


def start_servers(
    settings: Settings, work: Path, children: list[Child], floor_prefix: str, features: int
) -> list[Target]:
    """Ours (`fstore serve`, configured by a file of the run's settings) and the floor."""
    config = work / "featurestore.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    # Only the file configures ours: an FSTORE_* variable in this shell would override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env["FSTORE_CONFIG"] = str(config)
    ours_port, floor_port = free_port(), free_port()
    fstore = Path(sys.executable).parent / "fstore"
    ours = Child(
        "fstore serve",
        [str(fstore), "serve", "--host", HOST, "--port", str(ours_port)],
        work / "ours.log",
        env=env,
        cwd=work,
    )
    children.append(ours)
    floor = Child(
        "the floor",
        [
            sys.executable,
            str(HERE / "serving_floor.py"),
            *("--host", HOST, "--port", str(floor_port)),
            *("--redis-url", settings.redis.url, "--prefix", floor_prefix),
            *("--model", str(work / "model.txt"), "--features", str(features)),
        ],
        work / "floor.log",
    )
    children.append(floor)
    targets = [
        Target("ours", ours, f"http://{HOST}:{ours_port}/v1/predict/{MODEL}"),
        Target("floor", floor, f"http://{HOST}:{floor_port}/v1/predict/{MODEL}"),
    ]
    for target in targets:
        wait_ready(target, "u00000")
    return targets


def start_keyed(settings: Settings, work: Path, children: list[Child]) -> Target:
    """Ours again, on a copy of the registry holding one API key that every request sends."""
    keyed = settings.model_copy(update={"registry": copy_registry(settings, work, "keyed")})
    _, secret = KeyStore(keyed.registry).create("bench", [f"predict:{MODEL}"], "bench")
    headers = (("Authorization", f"Bearer {secret}"),)
    target = start_copy("ours_keyed", keyed, work, children, headers)
    status, _ = post(target.url, target.body(["u00000"]))  # without the key
    if status != 401:
        raise RuntimeError(f"the keyed server answered {status} to a request without its key")
    return target


def cluster_settings(settings: Settings, cluster: RedisCluster, work: Path) -> Settings:
    """The run's settings on the cluster, with a registry of their own (a copy) and an
    offline log of their own (one Redis's log would make the cluster's worker rebuild from it,
    not ingest)."""
    redis = RedisSettings(url=cluster.url, cluster=True, namespace=settings.redis.namespace)
    registry = copy_registry(settings, work, "cluster")
    offline = OfflineSettings(root=work / "offline-cluster")
    return settings.model_copy(update={"redis": redis, "registry": registry, "offline": offline})


def copy_registry(settings: Settings, work: Path, label: str) -> RegistrySettings:
    path = work / f"registry-{label}"
    shutil.copytree(settings.registry.path, path)
    return RegistrySettings(path=path)


def start_copy(
    name: str,
    settings: Settings,
    work: Path,
    children: list[Child],
    headers: tuple[tuple[str, str], ...] = (),
) -> Target:
    """Another `fstore serve` of the run's model, configured by `settings` alone."""
    config = work / f"featurestore-{name}.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env["FSTORE_CONFIG"] = str(config)
    port = free_port()
    fstore = Path(sys.executable).parent / "fstore"
    child = Child(
        f"fstore serve ({name})",
        [str(fstore), "serve", "--host", HOST, "--port", str(port)],
        work / f"{name}.log",
        env=env,
        cwd=work,
    )
    children.append(child)
    target = Target(name, child, f"http://{HOST}:{port}/v1/predict/{MODEL}", headers=headers)
    wait_ready(target, "u00000")
    return target


def scores_differ(a: str, b: str, users: list[str], attempts: int = 3) -> int:
    """How many of `users`' scores differ between two servers of the same model and events
    (again when a window edge passed between the two answers)."""
    body = json.dumps({"entities": {"user_id": users}}).encode()
    differ = len(users)
    for _attempt in range(attempts):
        answers = [post(url, body) for url in (a, b)]
        for status, answer in answers:
            if status != 200:
                raise RuntimeError(f"a server answered {status} to a check request: {answer}")
        x, y = (np.array(answer["scores"], dtype=np.float64) for _, answer in answers)
        differ = int((~np.isclose(x, y, rtol=1e-9, atol=1e-12)).sum())
        if differ == 0:
            return 0
    return differ


def wait_ready(target: Target, user: str, timeout: float = 120.0) -> None:
    """Up when a real request answers 200 (also proves the model is loaded)."""

    def answers() -> bool:
        status, _ = post(target.url, target.body([user]), headers=dict(target.headers))
        return status == 200

    target.child.wait_until(answers, timeout)
    log(f"{target.name} answers at {target.url}")


def feast_differ(target: Target, users: list[str], matrix: np.ndarray, rows: list[int]) -> int:
    status, response = post(target.url, target.body(users))
    if status != 200:
        raise RuntimeError(f"Feast answered {status}: {response}")
    got = feast_values(response, list(target.feature_names))
    want = matrix[rows]
    same = np.isclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True)
    return int((~same).sum())


# -- load ----------------------------------------------------------------------------------------


def load_points(
    args: argparse.Namespace,
    services: Services,
    targets: list[Target],
    users: list[str],
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Every (shape, rate) point, the targets taking turns; a saturated warm-up per shape and
    target, whose rate also sizes that target's saturated point."""
    batch = [users[i] for i in rng.choice(len(users), min(args.batch, len(users)), replace=False)]
    shapes = {"single": [users[int(rng.integers(len(users)))]], f"batch{args.batch}": batch}

    def cpu() -> dict[str, float | None]:
        return {**server_cpu(services), **{t.name: t.child.cpu_seconds() for t in targets}}

    points: list[dict[str, Any]] = []
    for shape, chosen in shapes.items():
        estimate: dict[str, float] = {}
        for target in targets:
            if target.saturated_single_only and shape != "single":
                continue
            warm = hey(
                target.url,
                target.body(chosen),
                seconds=args.warmup,
                concurrency=args.concurrency,
                headers=target.headers,
            )
            estimate[target.name] = warm["rps"] or 1.0
            log(f"warm-up {target.name} {shape}: {warm['rps']} req/s")
        # Saturated points are the noisiest: `--rounds` of them, the targets taking turns in
        # each; the figures are the medians.
        turns = [(rate, 0) for rate in args.rates] + [(None, r) for r in range(args.rounds)]
        for rate, round_ in turns:
            for target in targets:
                if target.saturated_single_only and (shape != "single" or rate is not None):
                    continue
                if rate is None:
                    workers = args.concurrency
                    count = max(workers, round(estimate[target.name] * args.seconds))
                else:
                    workers = max(1, math.ceil(rate / args.worker_rate))
                    count = max(workers, round(rate * args.seconds))
                count = math.ceil(count / workers) * workers  # each worker sends count / workers
                meter = Meter(cpu, args.wait_quiet)
                got = hey(
                    target.url,
                    target.body(chosen),
                    requests=count,
                    concurrency=workers,
                    rate=rate,
                    headers=target.headers,
                )
                got["load"] = meter.stop()
                point = {"target": target.name, "shape": shape, "rate": rate, "round": round_}
                point.update(got)
                served = got["load"].get(f"{target.name}_cpu_seconds")
                point["server_cpu_ms_per_request"] = (
                    round(1000 * served / got["responses"], 3)
                    if served is not None and got["responses"]
                    else None
                )
                points.append(point)
                log(
                    f"{target.name} {shape} {rate or 'saturated'}: {got['rps']} req/s, p50 "
                    f"{got['p50_ms']} ms, p99 {got['p99_ms']} ms, non-200 {got['non_200']}, "
                    f"no answer {got['no_response']}, others "
                    f"{got['load'].get('other_processes_cores')} cores"
                )
    return points


def point_key(point: dict[str, Any]) -> str:
    rate = "saturated" if point["rate"] is None else f"{point['rate']:g}rps"
    again = f"_round{point['round'] + 1}" if point.get("round") else ""
    return f"{point['target']}_{point['shape']}_{rate}{again}"


def figures(
    args: argparse.Namespace, points: list[dict[str, Any]], names: list[str]
) -> dict[str, Any]:
    """The flat figures: `[floor_|feast_][batchN_]p50_ms_<R>rps`, `..._rps_saturated`, ..."""
    out: dict[str, Any] = {}
    rounds: dict[str, list[dict[str, Any]]] = {}  # the rounds of each (target, shape, rate)
    for point in points:
        shape = "" if point["shape"] == "single" else f"{point['shape']}_"
        tail = "saturated" if point["rate"] is None else f"{point['rate']:g}rps"
        rounds.setdefault(f"{PREFIXES[point['target']]}{shape}|{tail}", []).append(point)
    for key, measured in rounds.items():
        head, tail = key.split("|")
        for figure in ("rps", "p50_ms", "p99_ms"):
            values = [p[figure] for p in measured if p[figure] is not None]
            out[f"{head}{figure}_{tail}"] = float(np.median(values)) if values else None
    batch = f"batch{args.batch}_"
    first = f"{args.rates[0]:g}rps"
    for prefix in PREFIXES.values():
        # The batch figures at the lowest rate, under the names.
        out[f"{prefix}{batch}p50_ms"] = out.get(f"{prefix}{batch}p50_ms_{first}")
        out[f"{prefix}{batch}p99_ms"] = out.get(f"{prefix}{batch}p99_ms_{first}")
        for key in ("rps_saturated", f"{batch}rps_saturated"):
            out.setdefault(f"{prefix}{key}", None)
        for rate in args.rates:
            for key in (f"p50_ms_{rate:g}rps", f"p99_ms_{rate:g}rps"):
                out.setdefault(f"{prefix}{key}", None)
    for rate in args.rates:
        tail = f"{rate:g}rps"
        out[f"p99_vs_floor_{tail}"] = ratio(out[f"p99_ms_{tail}"], out[f"floor_p99_ms_{tail}"])
        out[f"{batch}p99_vs_floor_{tail}"] = ratio(
            out.get(f"{batch}p99_ms_{tail}"), out.get(f"floor_{batch}p99_ms_{tail}")
        )
    out["rps_vs_floor_saturated"] = ratio(out["rps_saturated"], out["floor_rps_saturated"])
    out["rps_vs_feast_saturated"] = ratio(out["rps_saturated"], out["feast_rps_saturated"])
    out["rps_vs_feast_shipped_saturated"] = ratio(
        out["rps_saturated"], out.get("feast_shipped_rps_saturated")
    )
    out["rps_keyed_vs_open_saturated"] = ratio(out["keyed_rps_saturated"], out["rps_saturated"])
    out["rps_od_vs_plain_saturated"] = ratio(out["od_rps_saturated"], out["rps_saturated"])
    out["rps_cluster_vs_single_saturated"] = ratio(
        out["cluster_rps_saturated"], out["rps_saturated"]
    )
    for rate in args.rates:
        tail = f"{rate:g}rps"
        out[f"p99_cluster_vs_single_{tail}"] = ratio(
            out[f"cluster_p99_ms_{tail}"], out[f"p99_ms_{tail}"]
        )
    out[f"{batch}rps_od_vs_plain_saturated"] = ratio(
        out[f"od_{batch}rps_saturated"], out[f"{batch}rps_saturated"]
    )
    out[f"{batch}rps_keyed_vs_open_saturated"] = ratio(
        out[f"keyed_{batch}rps_saturated"], out[f"{batch}rps_saturated"]
    )
    out[f"{batch}rps_vs_floor_saturated"] = ratio(
        out[f"{batch}rps_saturated"], out[f"floor_{batch}rps_saturated"]
    )
    out["requests"] = sum(p["requests"] for p in points)
    out["non_200"] = sum(p["non_200"] for p in points)
    out["no_response"] = sum(p["no_response"] for p in points)
    out["all_succeeded"] = out["non_200"] == 0 and out["no_response"] == 0
    out["failures_by_target"] = {
        name: sum(p["non_200"] + p["no_response"] for p in points if p["target"] == name)
        for name in names
    }
    out["load"] = {point_key(p): p["load"].get("other_processes_cores") for p in points}
    out["rate_shortfalls"] = [
        point_key(p) for p in points if p["rate"] and (p["rps"] or 0) < 0.9 * p["rate"]
    ]
    for name, cores in out["load"].items():
        if cores is not None and cores > 0.15:
            log(f"warning: other processes used {cores} cores during {name}")
    for name in out["rate_shortfalls"]:
        log(f"warning: {name} fell short of its rate (the servers or hey could not keep up)")
    return out


def goals_met(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, bool | None]:
    def check(key: str, goal: float, higher: bool) -> bool | None:
        value = result.get(key)
        if value is None:
            return None
        return bool(value >= goal if higher else value <= goal)

    goals = {
        f"p99_vs_floor_{rate:g}rps": check(
            f"p99_vs_floor_{rate:g}rps", GOALS["p99_vs_floor"], False
        )
        for rate in args.rates
    }
    goals["rps_vs_floor_saturated"] = check(
        "rps_vs_floor_saturated", GOALS["rps_vs_floor_saturated"], True
    )
    goals["rps_vs_feast_saturated"] = check(
        "rps_vs_feast_saturated", GOALS["rps_vs_feast_saturated"], True
    )
    goals["rps_vs_feast_shipped_saturated"] = check(
        "rps_vs_feast_shipped_saturated", GOALS["rps_vs_feast_saturated"], True
    )
    goals["rps_keyed_vs_open_saturated"] = check(
        "rps_keyed_vs_open_saturated", GOALS["rps_keyed_vs_open_saturated"], True
    )
    if args.redis_cluster:
        for rate in args.rates:
            key = f"p99_cluster_vs_single_{rate:g}rps"
            goals[key] = check(key, GOALS["p99_cluster_vs_single"], False)
    if args.on_demand:
        goals["rps_od_vs_plain_saturated"] = check(
            "rps_od_vs_plain_saturated", GOALS["rps_od_vs_plain_saturated"], True
        )
    return goals


# -- report --------------------------------------------------------------------------------------


def print_summary(args: argparse.Namespace, result: dict[str, Any]) -> None:
    goals = result["goals_met"]
    batch = f"batch{args.batch}_"
    names = (
        "ours",
        "ours + API key",
        "floor",
        "Feast",
        "Feast as shipped",
        "ours + 2 on-demand",
        "ours on a cluster",
    )
    print(f"{'req/s, p50|p99 ms':<22} " + " ".join(f"{name:>22}" for name in names))
    tails = [f"{rate:g}rps" for rate in args.rates] + ["saturated"]
    for shape, head in (("single", ""), (f"batch of {args.batch}", batch)):
        for tail in tails:
            cells = []
            for prefix in PREFIXES.values():
                p50 = result.get(f"{prefix}{head}p50_ms_{tail}")
                p99 = result.get(f"{prefix}{head}p99_ms_{tail}")
                rps = result.get(f"{prefix}{head}rps_{tail}")
                cells.append(f"{show(rps)}/s {show(p50)}|{show(p99)}" if rps else "n/a")
            print(f"{shape + ' ' + tail:<22} " + " ".join(f"{cell:>22}" for cell in cells))
    for key, goal in goals.items():
        verdict = {True: "met", False: "MISSED", None: ""}[goal]
        print(f"{key:<26} {show(result.get(key), 'x'):>10}  {verdict}")
    print(
        f"requests {result['requests']:,}, non-200 {result['non_200']}, "
        f"no answer {result['no_response']}"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def rates(text: str) -> list[float]:
        values = sorted({float(part) for part in text.split(",") if part.strip()})
        if not values or values[0] <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give rates in req/s, e.g. 50,200")
        return values

    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=500_000, help="over the last 24 hours")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100, help="users in a batch request")
    parser.add_argument("--rates", type=rates, default=[50.0, 200.0], help="fixed req/s points")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each point")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, per shape and server")
    parser.add_argument("--concurrency", type=int, default=32, help="hey workers when saturated")
    parser.add_argument("--rounds", type=int, default=3, help="of each saturated point")
    parser.add_argument(
        "--worker-rate",
        type=float,
        default=100.0,
        help="at fixed rates, at most this many req/s per hey worker (each its own process)",
    )
    parser.add_argument("--check-users", type=int, default=200, help="users the checks compare")
    parser.add_argument(
        "--keys", action="store_true", help="also ours with an API key on every request"
    )
    parser.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="N",
        help="also ours reading from a local Redis Cluster of N masters",
    )
    parser.add_argument(
        "--on-demand",
        action="store_true",
        help="also a model with two request-time features, on the same server",
    )
    parser.add_argument("--feast", dest="feast", action="store_true", default=None)
    parser.add_argument("--no-feast", dest="feast", action="store_false", help="skip Feast")
    parser.add_argument("--feast-db", type=int, default=1, help="Feast's Redis database")
    parser.add_argument(
        "--feast-max-requests",
        type=int,
        default=0,
        help="gunicorn's worker recycling for Feast (0: never; Feast's own default is 1000)",
    )
    parser.add_argument(
        "--no-feast-shipped",
        dest="feast_shipped",
        action="store_false",
        help="skip the second Feast, with its default recycling (single saturated point only)",
    )
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.events, args.train_rows = 300, 10_000, 2_000
        args.seconds, args.warmup, args.concurrency, args.check_users = 1.0, 0.5, 8, 50
        args.rounds = 1
    if args.feast is None:
        args.feast = not args.quick  # --quick runs Feast only when asked to (--feast)
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    result = run(args)
    print_summary(args, result)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
