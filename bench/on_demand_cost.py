"""What two request-time (on-demand) features cost a predict request, in CPU, in process.

A predict request whose model reads on-demand features does, beyond a plain one: parse the
`request` object, convert each request field to its typed array, run each function (with its
output checks) and copy the outputs into the feature matrix — `featurestore.on_demand.evaluate`,
which `serving/scoring.py` calls once per feature per request. The view features the functions
read are ones the model reads already (here the 24 h sum and count, and the 1 h max, of
bench/serving.py's view), so the Redis round trip is the same. This times that added work for
two features — `amount_vs_mean_24h` (a float request field over two view features) and
`channel_is_web` (a string request field) — for one row and for a batch of `--batch` rows, the
best of `--repeat` timings of `--calls` requests each, beside the same run's plain Python
request parse, so the figures can be read against the server CPU per saturated predict request
(`server_cpu_ms_per_request` of bench/serving.py: 0.224 ms for the plain model in the
`--on-demand` run of BENCHMARKS.md).

    python bench/on_demand_cost.py            # ~10 s
    python bench/on_demand_cost.py --quick
    python bench/on_demand_cost.py --against /tmp/od-base   # old code's evaluate, interleaved

`--against DIR` times the `featurestore/on_demand.py` of another checkout (e.g. a `git worktree`
of main) in the same process, each timing of this code followed by one of that, so a shared
machine's load falls on both alike (`against_on_demand_us`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson
from _cli import add_common_arguments
from _report import log
from serving_on_demand import ON_DEMAND as FEATURES
from serving_workload import VIEW

import featurestore.on_demand as this_on_demand


def request_body(rows: int) -> bytes:
    rng = np.random.default_rng(1)
    return orjson.dumps(
        {
            "entities": {"user_id": [f"u{i}" for i in range(rows)]},
            "request": {
                "amount": rng.uniform(1, 500, rows).round(2).tolist(),
                "channel": rng.choice(["web", "app", "pos"], rows).tolist(),
            },
        }
    )


def per_request_us(
    rows: int, calls: int, repeat: int, against: ModuleType | None = None
) -> dict[str, float]:
    """The added work per request, and the body parse it rides on (for scale)."""
    body = request_body(rows)
    request = orjson.loads(body)["request"]
    rng = np.random.default_rng(2)
    views = {
        f"{VIEW}:amount_sum_24h": rng.uniform(0, 5000, rows),
        f"{VIEW}:count_24h": rng.integers(0, 40, rows).astype(np.float64),
    }
    matrix = np.full((rows, 14), np.nan)

    def added_with(module: ModuleType) -> Any:
        # As a model load does: each feature prepared once (rebuilt by that module's classes).
        features = [
            module.OnDemandFeature.model_validate(f.model_dump(by_alias=True)) for f in FEATURES
        ]
        prepared = [module.PreparedFeature.of(feature) for feature in features]
        evaluate = module.evaluate

        def added() -> None:
            converted: dict[Any, Any] = {}  # one request's fields, converted once (scoring.py)
            for column, feature in enumerate(prepared):
                for values in evaluate(feature, request, views, rows, converted).values():
                    matrix[:, 12 + column] = values

        return added

    def parse() -> None:
        orjson.loads(body)

    def best(work: Any) -> float:
        timer = timeit.Timer(work)
        return round(min(timer.repeat(repeat=repeat, number=calls)) / calls * 1e6, 2)

    result = {"json_parse_us": best(parse)}
    if against is None:
        return {"on_demand_us": best(added_with(this_on_demand)), **result}
    works = {
        "on_demand_us": added_with(this_on_demand),
        "against_on_demand_us": added_with(against),
    }
    for name in works:
        result[name] = float("inf")
    for _ in range(repeat):  # interleaved: one timing of each in turn
        for name, work in works.items():
            result[name] = min(
                result[name], round(timeit.timeit(work, number=calls) / calls * 1e6, 2)
            )
    return result


def on_demand_module_at(folder: Path) -> ModuleType:
    """`featurestore/on_demand.py` of another checkout, imported beside this one's."""
    path = folder / "featurestore" / "on_demand.py"
    spec = importlib.util.spec_from_file_location("against_on_demand", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--against: no {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"features": len(FEATURES), "calls": args.calls}
    against = on_demand_module_at(args.against) if args.against else None
    if args.against:
        result["against"] = str(args.against)
    for name, rows in (("single", 1), (f"batch{args.batch}", args.batch)):
        result[name] = per_request_us(rows, args.calls, args.repeat, against)
        log(f"{name}: {result[name]}")
    server_us = args.server_cpu_ms * 1000
    result["server_cpu_us_per_request"] = server_us
    result["share_of_single_request"] = round(result["single"]["on_demand_us"] / server_us, 4)
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--calls", type=int, default=20_000, help="per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings; the best is kept")
    parser.add_argument("--batch", type=int, default=100, help="rows in a batch request")
    parser.add_argument(
        "--server-cpu-ms",
        type=float,
        default=0.224,
        help="server CPU per saturated single-entity predict (bench/serving.py) to compare with",
    )
    parser.add_argument(
        "--against", type=Path, default=None, help="another checkout whose evaluate to time too"
    )
    add_common_arguments(parser, files=False)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.repeat = 200, 2
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
