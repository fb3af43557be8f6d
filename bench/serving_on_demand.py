"""The serving benchmark's request-time features (`bench/serving.py --on-demand`): two on-demand
features over the benchmark view, a second model that reads them beside the view's 12 features,
the request fields its requests carry, and the check that it scores what it was built on.

- `bench_amount_vs_mean`: the request's float `amount` over the user's 24 h mean (24 h sum over
  24 h count, both read by the model already, so the Redis round trip does not grow);
- `bench_channel`: whether the request's string `channel` is "web".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from serving_workload import VIEW, post

from featurestore.config import Settings
from featurestore.on_demand import RequestSource, evaluate, on_demand_feature
from featurestore.registry import Registry
from featurestore.repo import RepoContents

__all__ = [
    "ON_DEMAND",
    "ON_DEMAND_MODEL",
    "on_demand_columns",
    "on_demand_differ",
    "register_on_demand",
    "request_fields",
]

ON_DEMAND_MODEL = "bench_model_od"
TXN = RequestSource(name="bench_txn", schema={"amount": "float64", "channel": "string"})
CHANNELS = ("web", "app", "pos")


@on_demand_feature(
    name="bench_amount_vs_mean",
    request=[TXN],
    features=[f"{VIEW}:amount_sum_24h", f"{VIEW}:count_24h"],
    outputs={"amount_vs_mean_24h": "float64"},
)
def amount_vs_mean(inputs):  # type: ignore[no-untyped-def]
    count = inputs["count_24h"]
    mean = inputs["amount_sum_24h"] / np.where(count > 0, count, np.nan)
    return {"amount_vs_mean_24h": inputs["amount"] / np.where(mean > 0, mean, np.nan)}


@on_demand_feature(name="bench_channel", request=[TXN], outputs={"channel_is_web": "bool"})
def channel(inputs):  # type: ignore[no-untyped-def]
    return {"channel_is_web": inputs["channel"] == "web"}


ON_DEMAND = (amount_vs_mean, channel)


def request_fields(rows: int) -> dict[str, list[Any]]:
    """The request fields of a request of `rows` rows (the same for the same count)."""
    return {
        "amount": [round(20.0 + 13.7 * (i % 11), 2) for i in range(rows)],
        "channel": [CHANNELS[i % len(CHANNELS)] for i in range(rows)],
    }


def register_on_demand(settings: Settings) -> list[tuple[str, str]]:
    """Register the two features; the (ref, model feature name) of each output."""
    registry = Registry(settings.registry)
    registry.apply(RepoContents(on_demand={f.name: f for f in ON_DEMAND}))
    specs = []
    for feature in ON_DEMAND:
        version = registry.get_on_demand(feature.name).version
        specs += [
            (f"{feature.name}@{version}:{o}", f"{feature.name}__{o}") for o in feature.outputs
        ]
    return specs


def on_demand_columns(
    names: list[str], matrix: np.ndarray, fields: dict[str, list[Any]]
) -> np.ndarray:
    """The two outputs for rows of the view's features (`matrix`, columns `names`), computed
    by the function serving runs."""
    views = {
        f"{VIEW}:{name}": matrix[:, names.index(name)] for name in ("amount_sum_24h", "count_24h")
    }
    columns = []
    for feature in ON_DEMAND:
        columns += list(evaluate(feature, fields, views, len(matrix)).values())
    return np.column_stack(columns)


def on_demand_differ(url: str, users: list[str], expected: np.ndarray) -> int:
    """How many of the two served outputs of `users` differ from `expected` (users x 2)."""
    body = {
        "entities": {"user_id": users},
        "request": request_fields(len(users)),
        "return_features": True,
    }
    status, answer = post(url, orjson.dumps(body))
    if status != 200:
        raise RuntimeError(f"the on-demand model answered {status}: {answer}")
    got = np.column_stack(
        [
            np.array(answer["features"][f"{f.name}__{o}"], dtype=np.float64)
            for f in ON_DEMAND
            for o in f.outputs
        ]
    )
    return int((~np.isclose(got, expected, rtol=1e-12, atol=0, equal_nan=True)).sum())
