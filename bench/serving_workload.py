"""The serving benchmark's workload: events through the real ingest path, the 12 feature values
it leaves in Redis, the model, and the checks that the three servers compute the same thing."""

from __future__ import annotations

import hashlib
import json
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import lightgbm as lgb
import numpy as np
import redis
from _services import register_views
from ingest_workload import CHUNK, TILE_MS, WINDOWS, Events, make_view, produce
from serving_floor import floor_key

from featurestore.config import ModelsSettings, Settings
from featurestore.models.registry import (
    PRODUCTION,
    DatasetRef,
    FeatureSpec,
    ModelRegistry,
    Objective,
    Signature,
)
from featurestore.registry import Registry
from featurestore.store import FeatureStore
from featurestore.timestamps import from_us
from streaming.ingest.worker import Worker
from streaming.topics import ensure_topic

__all__ = [
    "VIEW",
    "apply_topic",
    "compare_scores",
    "feature_matrix",
    "generate_events",
    "ingest",
    "post",
    "register_model",
    "train_model",
    "values_wrong",
    "write_floor",
]

VIEW = "bench_serve"
DAY_MS = 86_400_000
PARTITIONS = 6
WHO = "bench/serving.py"


def generate_events(count: int, users: int, seed: int) -> Events:
    """`count` events of uniform users over the last 24 hours, in time order (none is late)."""
    rng = np.random.default_rng([seed, count])
    now_ms = time.time_ns() // 1_000_000
    ts = np.sort(rng.integers(now_ms - DAY_MS + 60_000, now_ms - 2_000, count))
    return Events(
        user=rng.integers(0, users, count),
        ts_ms=ts,
        amount=np.round(rng.gamma(2.0, 25.0, count), 2),
    )


def ingest(settings: Settings, topic: str, events: Events) -> dict[str, Any]:
    """Register the view, produce the events to `topic` and run the streaming worker until it
    has applied all of them: Redis then holds what live ingestion would have left there."""
    register_views(settings.registry, make_view(VIEW, topic))
    ensure_topic(settings.kafka, topic, partitions=PARTITIONS)
    began = time.perf_counter()
    chunks = (
        Events(
            events.user[i : i + CHUNK], events.ts_ms[i : i + CHUNK], events.amount[i : i + CHUNK]
        )
        for i in range(0, len(events.ts_ms), CHUNK)
    )
    produced, _ = produce(settings.kafka, topic, chunks)
    produce_seconds = time.perf_counter() - began
    return {"produce_seconds": round(produce_seconds, 2), **apply_topic(settings, topic, produced)}


def apply_topic(
    settings: Settings, topic: str, produced: int, group: str = "worker"
) -> dict[str, Any]:
    """Run the streaming worker over `topic` (in a consumer group of its own) until it has
    applied its `produced` events into the online store of `settings`."""
    registered = Registry(settings.registry).get_view(VIEW)
    worker = Worker(settings, [(registered.view, registered.version)], group=f"{topic}.{group}")
    # The worker installs SIGINT/SIGTERM handlers that only stop it; put ours back after.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    began = time.perf_counter()
    try:
        worker.run(until=lambda w: w.counters.consumed >= produced)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    seconds = time.perf_counter() - began
    counters = worker.counters
    return {
        "produced": produced,
        "applied": counters.applied,
        "late": counters.late,
        "dead_lettered": counters.dead_lettered,
        "worker_seconds": round(seconds, 2),
        "events_per_s": round(counters.applied / seconds) if seconds else None,
    }


def feature_matrix(settings: Settings, users: list[str]) -> tuple[list[str], np.ndarray, int]:
    """The view's 12 features for `users` as our online store serves them now (NaN where a
    feature has no value), read at one instant; with the names and that instant (ms)."""
    store = FeatureStore(settings)
    names = Registry(settings.registry).get_view(VIEW).view.feature_names()
    as_of_ms = time.time_ns() // 1_000_000
    rows = []
    for low in range(0, len(users), 1_000):
        got = store.get_online_features(
            entities={"user_id": users[low : low + 1_000]},
            features=[f"{VIEW}:{name}" for name in names],
            as_of=from_us(as_of_ms * 1_000),
        )
        rows.append(
            np.array(
                [
                    [np.nan if v is None else v for v in got.features[f"{VIEW}:{n}"].values]
                    for n in names
                ],
                dtype=np.float64,
            ).T
        )
    return names, np.vstack(rows), as_of_ms


def values_wrong(
    events: Events, names: list[str], matrix: np.ndarray, as_of_ms: int, rows: list[int]
) -> int:
    """How many of the sampled users' values differ from numpy over the generated events (the
    window of n tiles: tiles floor(t/T)-n+1 .. floor(t/T), events up to t; docs/semantics.md)."""
    wrong = 0
    for row in rows:
        mine = events.user == row
        ts, amount = events.ts_ms[mine], events.amount[mine]
        for column, name in enumerate(names):
            prefix, window = name.rsplit("_", 1)
            inside = (ts // TILE_MS >= as_of_ms // TILE_MS - WINDOWS[window] + 1) & (ts <= as_of_ms)
            chosen = amount[inside]
            want = {
                "count": float(len(chosen)),
                "amount_sum": float(chosen.sum()),
                "amount_mean": float(chosen.mean()) if len(chosen) else np.nan,
                "amount_max": float(chosen.max()) if len(chosen) else np.nan,
            }[prefix]
            got = matrix[row, column]
            if not np.isclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True):
                wrong += 1
    return wrong


def write_floor(url: str, prefix: str, users: list[str], matrix: np.ndarray) -> None:
    """The floor's plain hashes: fields "0".."11", each value as text ("nan": no value)."""
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for user, values in zip(users, matrix.tolist(), strict=True):
        pipe.hset(floor_key(prefix, user), mapping={str(i): repr(v) for i, v in enumerate(values)})
        if len(pipe) >= 1_000:
            pipe.execute()
    pipe.execute()


def train_model(
    matrix: np.ndarray, names: list[str], trees: int, rows: int, seed: int
) -> tuple[lgb.Booster, dict[str, float]]:
    """`trees` trees, no early stopping, on `rows` rows drawn from the users' values (jittered)
    with a noisy label: a model of the real size over the real value ranges."""
    rng = np.random.default_rng(seed)
    x = matrix[rng.integers(0, len(matrix), rows)] * rng.uniform(0.8, 1.2, (rows, len(names)))
    # A label from the standardised features plus as much noise: balanced, and learnable, so
    # the trees really split (a constant label would give 200 one-leaf trees, free to predict).
    z = np.nan_to_num((x - np.nanmean(x, axis=0)) / (np.nanstd(x, axis=0) + 1e-9), nan=0.0)
    y = (z @ rng.normal(0, 1, len(names)) + rng.normal(0, 2, rows) > 0).astype(np.int8)
    cut = rows * 4 // 5
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.05, "verbose": -1}
    params["seed"] = seed
    train = lgb.Dataset(x[:cut], y[:cut], feature_name=[f"{VIEW}__{n}" for n in names])
    booster = lgb.train(params, train, num_boost_round=trees)
    leaves = booster.dump_model()["tree_info"]
    return booster, {
        "auc": auc(y[cut:], np.asarray(booster.predict(x[cut:]))),
        "positives": float(y.mean()),
        "mean_leaves": float(np.mean([tree["num_leaves"] for tree in leaves])),
    }


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The rank form of ROC AUC (ties get their mean rank)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):
        same = scores == value
        ranks[same] = ranks[same].mean()
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return 0.5
    return float(
        (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def register_model(
    config: ModelsSettings,
    name: str,
    booster: lgb.Booster,
    names: list[str],
    metrics: dict[str, float],
    extra: list[tuple[str, str]] | None = None,
) -> int:
    """Register the model with its 12 pinned feature refs (and the (ref, name) of any `extra`
    features after them) and promote it to production."""
    registry = ModelRegistry(config)
    text = booster.model_to_string()
    specs = [FeatureSpec(ref=f"{VIEW}@1:{n}", name=f"{VIEW}__{n}") for n in names]
    specs += [FeatureSpec(ref=ref, name=name) for ref, name in extra or []]
    signature = Signature(features=tuple(specs), entity_keys=("user_id",))
    registered = registry.register(
        name,
        text,
        objective=Objective.BINARY,
        signature=signature,
        label="random",
        dataset=DatasetRef("random-rows", 1, hashlib.sha256(text.encode()).hexdigest()),
        views={VIEW: 1},
        params={"num_boost_round": booster.num_trees()},
        metrics=metrics,
        primary_metric="auc",
        profile={},
        who=WHO,
        description="bench/serving.py: random rows, for load only",
    )
    registry.set_alias(name, PRODUCTION, registered.version, who=WHO, reason="benchmark run")
    return int(registered.version)


def post(
    url: str, body: bytes, timeout: float = 10.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """POST JSON; the status and the parsed answer (or its text when it is not JSON)."""
    request = urllib.request.Request(  # noqa: S310 - a URL this benchmark built
        url,
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode(errors="replace")


def compare_scores(
    settings: Settings, prefix: str, ours: str, floor: str, users: list[str], attempts: int = 3
) -> int:
    """How many of `users`' scores differ between ours and the floor, asked one batch each.

    Ours computes features at request time, the floor reads what was written: the floor's rows
    of `users` are refreshed first, and the comparison repeated when a window edge (a minute)
    passed in between.
    """
    differ = len(users)
    for _attempt in range(attempts):
        _, matrix, _ = feature_matrix(settings, users)
        write_floor(settings.redis.url, prefix, users, matrix)
        body = json.dumps({"entities": {"user_id": users}}).encode()
        answers = [post(url, body) for url in (ours, floor)]
        for status, answer in answers:
            if status != 200:
                raise RuntimeError(f"a server answered {status} to a check request: {answer}")
        a = np.array(answers[0][1]["scores"], dtype=np.float64)
        b = np.array(answers[1][1]["scores"], dtype=np.float64)
        differ = int((~np.isclose(a, b, rtol=1e-9, atol=1e-12)).sum())
        if differ == 0:
            return 0
    return differ
