"""Where a predict request's server CPU goes, with and without two request-time features.

bench/serving.py --on-demand measures the whole server: a model reading two on-demand features
costs more CPU per request than the plain one, and more than the on-demand work itself
(bench/on_demand_cost.py). This attributes the difference in process, on the server's own code:
one `ServingState` (as `fstore serve` builds it, prediction log on, real Redis and Kafka; the
Redis deadline raised to 10 s: a slow shared Redis must not fail a CPU count) calls
`Predictor.predict` and its after-response work (metrics, prediction-log record) for three
models of the same size (`--trees` trees, 31 leaves) over bench/serving.py's view and data:

- `plain`: the view's 12 features (bench/serving.py's model);
- `wide`: 14 features — the 12 plus 2 sent as `request_features` (plain values given by the
  caller): the cost of the larger model, body and log record without any on-demand work;
- `on_demand`: the 12 plus the two on-demand outputs of bench/serving_on_demand.py, computed from
  the request's `request` fields.

For each it reports the CPU per single-entity request (best of `--repeat` timings of
`--calls` requests, interleaved: each timing runs the three in turn; many short timings, so the
best falls in a quiet moment of a shared machine); the parse + matrix fill alone over one Redis
answer held fixed, in a tight loop and each right after a plain predict (`on_demand_path_us`,
`on_demand_path_cold_us`: on-demand minus wide, the on-demand path itself); and, from one
cProfile run, each stage's share: body parse, plan, Redis read (the pipelined call; its wait is
not CPU), on-demand evaluation, scoring, response, after-response.

    python bench/on_demand_stages.py            # ~1 minute
    python bench/on_demand_stages.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import json
import pstats
import sys
import time
import uuid
from typing import Any

import numpy as np
import orjson
from _cli import add_common_arguments, working_folder
from _machine import machine
from _report import log
from _services import cleanup_services, run_settings, services_versions, start_services
from serving_on_demand import ON_DEMAND_MODEL, on_demand_columns, register_on_demand
from serving_workload import VIEW, feature_matrix, generate_events, ingest, register_model
from serving_workload import train_model as train

from featurestore.config import ServingSettings, Settings

PLAIN, WIDE = "bench_model", "bench_model_wide"
# The wide model's two extra features: request_features, named like the on-demand outputs.
WIDE_EXTRA = ("wide__amount_vs_mean_24h", "wide__channel_is_web")
# Stages: (label, the function whose cumulative time is the stage's), in the order they run.
STAGES = (
    ("parse", "parse_predict"),
    ("plan", "plan_groups"),
    ("read_views", "read_views_async"),
    ("on_demand", "_on_demand"),
    ("score", "_score"),
    ("response", "_response"),
    ("after_response", "_record"),
)


def bodies(user: str) -> dict[str, bytes]:
    """One single-entity request per model, as bench/serving.py sends them."""
    entities = {"user_id": [user]}
    return {
        PLAIN: orjson.dumps({"entities": entities}),
        WIDE: orjson.dumps(
            {
                "entities": entities,
                "request_features": {WIDE_EXTRA[0]: [1.7], WIDE_EXTRA[1]: [1.0]},
            }
        ),
        ON_DEMAND_MODEL: orjson.dumps(
            {"entities": entities, "request": {"amount": [83.4], "channel": ["web"]}}
        ),
    }


def build_models(settings: Settings, args: argparse.Namespace, users: list[str]) -> None:
    names, matrix, _ = feature_matrix(settings, users)
    booster, _ = train(matrix, names, args.trees, args.train_rows, args.seed)
    register_model(settings.models, PLAIN, booster, names, {"auc": 0.5})
    specs = register_on_demand(settings)
    fields = {
        "amount": [round(20.0 + 13.7 * (i % 11), 2) for i in range(len(matrix))],
        "channel": [("web", "app", "pos")[i % 3] for i in range(len(matrix))],
    }
    wide = np.hstack([matrix, on_demand_columns(names, matrix, fields)])
    extra_names = names + [name for _, name in specs]
    od_booster, _ = train(wide, extra_names, args.trees, args.train_rows, args.seed)
    register_model(settings.models, ON_DEMAND_MODEL, od_booster, names, {"auc": 0.5}, specs)
    # The same trees over the same 14 columns, the two extra ones given by the caller: each is
    # declared on a view feature the model reads anyway, which request_features replace.
    wide_specs = [
        (f"{VIEW}@1:amount_sum_24h", WIDE_EXTRA[0]),
        (f"{VIEW}@1:count_24h", WIDE_EXTRA[1]),
    ]
    register_model(settings.models, WIDE, od_booster, names, {"auc": 0.5}, wide_specs)


def serving_state(settings: Settings) -> Any:
    """`fstore serve`'s state, built in process. bench/serving.py shadows the `serving` package
    for the scripts of this folder, so it is imported with the folder off the path."""
    folder = sys.path.pop(0)
    try:
        state_module = importlib.import_module("serving.state")
    finally:
        sys.path.insert(0, folder)
    return state_module.ServingState(settings)


async def timed(state: Any, model: str, body: bytes, calls: int) -> float:
    """CPU µs per request: predict, then its after-response work, `calls` times."""
    predictor = state.predictor
    began = time.process_time()
    for _ in range(calls):
        scored = await predictor.predict(model, body, None)
        scored.after()
    return (time.process_time() - began) / calls * 1e6


async def profiled(state: Any, model: str, body: bytes, calls: int) -> dict[str, float]:
    """µs per request spent in each stage (cumulative time of its function under cProfile)."""
    profile = cProfile.Profile()
    predictor = state.predictor
    profile.enable()
    for _ in range(calls):
        scored = await predictor.predict(model, body, None)
        scored.after()
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for label, function in STAGES:
        seconds = sum(entry[3] for (_, _, name), entry in stats.items() if name == function)
        out[label] = round(seconds / calls * 1e6, 2)
    total = sum(entry[2] for entry in stats.values())  # every function's own time
    out["total_profiled"] = round(total / calls * 1e6, 2)
    return out


class FillTimer:
    """Times what the server does between Redis's answer and `Booster.predict` for one model
    (`parse_predict` and `_FeatureReads.fill`: the matrix, and the on-demand path when the
    model has one), over one real answer held fixed: the on-demand path without Redis's noise.
    `hot`: CPU µs a request in a tight loop; `cold_ns`: one request's wall ns right after a
    plain model's whole predict has run, as in the server, where each request's on-demand
    code runs between other requests' Redis reads, trees and logging."""

    def __init__(self, state: Any, body: bytes) -> None:
        self.scoring = importlib.import_module("serving.scoring")
        self.inputs = importlib.import_module("serving.inputs")
        self.state, self.body = state, body
        self.groups: Any = None
        self.values: Any = None

    async def read(self, model: str) -> None:
        """Plan the model's groups and read Redis once: the answer every timing reuses."""
        online = importlib.import_module("featurestore.online")
        predictor = self.state.predictor
        parsed = self.inputs.parse_predict(self.body, predictor.max_batch)
        self.groups = self.scoring.plan_groups(predictor.models.snapshot.get(model), parsed, None)
        reads = self.scoring._FeatureReads(self.groups, parsed)  # noqa: SLF001 - timed stage
        as_of_us = time.time_ns() // 1_000
        self.values = await online.read_views_async(predictor.online, reads.views, as_of_us)

    def once(self) -> None:
        parsed = self.inputs.parse_predict(self.body, self.state.predictor.max_batch)
        self.scoring._FeatureReads(self.groups, parsed).fill(self.values)  # noqa: SLF001

    def hot(self, calls: int) -> float:
        began = time.process_time()
        for _ in range(calls):
            self.once()
        return (time.process_time() - began) / calls * 1e6

    def cold_ns(self) -> int:
        began = time.perf_counter_ns()
        self.once()
        return time.perf_counter_ns() - began


async def cold_fills(
    state: Any, fills: dict[str, FillTimer], plain_body: bytes, calls: int
) -> dict[str, float]:
    """Median µs of each model's parse + fill, each timed right after a plain predict."""
    samples: dict[str, list[int]] = {model: [] for model in fills}
    for _ in range(calls):
        for model, fill in fills.items():
            scored = await state.predictor.predict(PLAIN, plain_body, None)
            scored.after()
            samples[model].append(fill.cold_ns())
    return {model: round(float(np.median(ns)) / 1e3, 2) for model, ns in samples.items()}


async def measure(state: Any, user: str, args: argparse.Namespace) -> dict[str, Any]:
    requests = bodies(user)
    for model, body in requests.items():  # warm: models loaded, plans and clients built
        await timed(state, model, body, 200)
        scored = await state.predictor.predict(model, body, None)
        answer = orjson.loads(scored.answer)
        log(f"{model}: {answer.get('scores')}")
    best: dict[str, float] = {model: float("inf") for model in requests}
    for _ in range(args.repeat):
        for model, body in requests.items():
            best[model] = min(best[model], await timed(state, model, body, args.calls))
    fills = {model: FillTimer(state, body) for model, body in requests.items()}
    for model, fill in fills.items():
        await fill.read(model)
    fill_best: dict[str, float] = {model: float("inf") for model in requests}
    for _ in range(args.repeat):
        for model, fill in fills.items():
            fill_best[model] = min(fill_best[model], fill.hot(args.calls * 4))
    cold = await cold_fills(state, fills, requests[PLAIN], args.calls * 4)
    stages = {
        model: await profiled(state, model, body, args.profile_calls)
        for model, body in requests.items()
    }
    plain = best[PLAIN]
    return {
        "cpu_us_per_request": {model: round(us, 2) for model, us in best.items()},
        "vs_plain": {model: round(us / plain - 1, 4) for model, us in best.items()},
        # Parse and fill only, Redis's answer held fixed: od - wide is the on-demand path,
        # in a tight loop (hot) and each right after another request's predict (cold).
        "parse_fill_us_per_request": {model: round(us, 2) for model, us in fill_best.items()},
        "on_demand_path_us": round(fill_best[ON_DEMAND_MODEL] - fill_best[WIDE], 2),
        "parse_fill_cold_us_median": cold,
        "on_demand_path_cold_us": round(cold[ON_DEMAND_MODEL] - cold[WIDE], 2),
        "stages_us_profiled": stages,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with working_folder("fstore-bench-od-stages-", args.tmp, args.keep) as work:
        run_id = uuid.uuid4().hex[:8]
        services = start_services(work / "services")
        topic, predictions = f"bench.od.{run_id}", f"bench.od.predictions.{run_id}"
        namespace = f"bench-od-{run_id}"
        try:
            settings = run_settings(
                services,
                work,
                namespace,
                serving=ServingSettings(prediction_log_topic=predictions, redis_deadline_ms=10_000),
            )
            result: dict[str, Any] = {
                "machine": machine(**services_versions(services)),
                "users": args.users,
                "events": args.events,
                "trees": args.trees,
                "calls": args.calls,
                "repeat": args.repeat,
            }
            users = [f"u{i:05d}" for i in range(args.users)]
            ingest(settings, topic, generate_events(args.events, args.users, args.seed))
            build_models(settings, args, users)
            state = serving_state(settings)
            state.start()
            try:
                result.update(asyncio.run(measure(state, users[1], args)))
            finally:
                state.stop()
            return result
        finally:
            cleanup_services(services, [topic, predictions], [namespace])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=100_000, help="over the last 24 hours")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=500, help="requests per timing")
    parser.add_argument("--repeat", type=int, default=30, help="timings per model; best kept")
    parser.add_argument("--profile-calls", type=int, default=2_000, help="requests profiled")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.events, args.train_rows, args.trees = 200, 5_000, 1_000, 20
        args.calls, args.repeat, args.profile_calls = 50, 1, 50
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
