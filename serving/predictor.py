"""Answering a predict request: raw body in, JSON bytes out, with its metrics, the prediction
log and the shadow hand-off.

The hot path: raw body -> orjson -> checks -> one Redis round trip, awaited on the event loop
within the Redis deadline (shedding.py) -> one `Booster.predict` per version -> orjson
response. Metrics, the prediction log and the shadow alias come after the response is sent, and
only count and append to queues. The FastAPI route (routes/predict.py, kept for /docs and
schemathesis) and the fast path in front of FastAPI (fastpath.py) both call
`Predictor.predict`: one logic, two ways in.
"""

from __future__ import annotations

import functools
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from featurestore.models.registry import SHADOW
from featurestore.online import OnlineStore
from featurestore.prediction_records import SERVED_ROLE, LogBatch
from featurestore.timestamps import from_us
from serving.inputs import PredictInput, parse_predict
from serving.metrics import Children, ServingMetrics
from serving.model_cache import LoadedModel, ModelCache
from serving.prediction_log import PredictionLog
from serving.scoring import (
    UNSCORED_REASON,
    Group,
    missing_names,
    plan_groups,
    score_groups_async,
)
from serving.shadow import ShadowJob, ShadowScorer
from serving.shedding import LoadShedder

__all__ = ["SCORED", "UNSCORED", "Predictor", "RequestIds", "Scored"]

SCORED, UNSCORED = "scored", "unscored"  # a row's status in the answer


class RequestIds:
    """Request ids of one app instance: a random prefix and a counter, 32 hex digits like a
    uuid4's. `uuid.uuid4()` reads the OS's random source on every call; this formats a number.

    >>> ids = RequestIds()
    >>> first, second = ids.next(), ids.next()
    >>> len(first), first[:16] == second[:16], first != second
    (32, True, True)
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)  # each process builds its own app, so its own prefix
        self._counter = itertools.count()  # next() is atomic under the GIL

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


@dataclass(frozen=True)
class Scored:
    """A predict request's answer, and `after`: its metrics, prediction log records and shadow
    job, for the caller to run once the answer is sent (~20 µs a row that no response waits
    for)."""

    answer: bytes
    after: Callable[[], None]


class Predictor:
    """Scores predict requests with the cache's models and the online store's features, and
    hands what each scored to the metrics, the prediction log and the shadow scorer."""

    def __init__(
        self,
        models: ModelCache,
        online: OnlineStore,
        metrics: ServingMetrics,
        prediction_log: PredictionLog,
        shadow: ShadowScorer,
        shedder: LoadShedder,
        max_batch: int,
    ) -> None:
        self.models = models
        self.online = online
        self.prediction_log = prediction_log
        self.shadow = shadow
        self.shedder = shedder
        self.max_batch = max_batch
        self.ids = RequestIds()
        self._latency = Children(metrics.model_latency)
        self._predictions = Children(metrics.predictions)
        self._missing = Children(metrics.missing_features)
        self._unscored = Children(metrics.unscored)

    async def predict(self, model: str, body: bytes, alias: str | None) -> Scored:
        """The JSON response to `POST /v1/predict/{model}[?alias=]` with this body, and what is
        left to do once it is sent; raises a `ServingError` or a core error for a bad request or
        an outage (error_responses.py)."""
        start = time.perf_counter()
        parsed = parse_predict(body, self.max_batch)
        loaded = self.models.snapshot.get(model)
        groups = plan_groups(loaded, parsed, alias)
        as_of_us = time.time_ns() // 1_000
        # On the event loop: while Redis answers, the loop serves other requests (the read is
        # pipelined with theirs); scoring itself is a few µs a row. Within the Redis deadline.
        await self.shedder.read(score_groups_async(self.online, groups, parsed, as_of_us))
        request_id = self.ids.next()
        answer = _response(loaded.name, request_id, groups, parsed)
        elapsed = time.perf_counter() - start
        return Scored(
            answer,
            functools.partial(
                self._record, loaded, groups, parsed, request_id, as_of_us, alias, elapsed
            ),
        )

    def _record(
        self,
        loaded: LoadedModel,
        groups: list[Group],
        parsed: PredictInput,
        request_id: str,
        as_of_us: int,
        alias: str | None,
        elapsed: float,
    ) -> None:
        """Metrics, the prediction log and the shadow job: counters and queue appends only."""
        for group in groups:
            self._latency(loaded.name, group.version.version).observe(elapsed)
            assert group.missing is not None  # noqa: S101 - scored
            scored = group.scored_rows
            if scored:
                self._predictions(loaded.name, group.version.version, group.alias, SERVED_ROLE).inc(
                    scored
                )
            if scored < len(group.rows):
                self._unscored(loaded.name, "all_missing").inc(len(group.rows) - scored)
            if group.any_missing:
                missing = group.missing.sum(axis=0)
                for column in np.flatnonzero(missing):
                    self._missing(loaded.name, group.version.names[column]).inc(
                        int(missing[column])
                    )
        shadow = loaded.shadow if alias != SHADOW else None
        if not self.prediction_log.enabled and shadow is None:
            return
        at = from_us(as_of_us)
        if self.prediction_log.enabled:
            logged = tuple(g for g in (group.logged() for group in groups) if g is not None)
            if logged:  # a request whose every row went unscored served no score to log
                self.prediction_log.submit(
                    LogBatch(
                        request_id,
                        at,
                        loaded.name,
                        SERVED_ROLE,
                        parsed.entities,
                        loaded.route_keys or groups[0].version.entity_keys,
                        logged,
                        frozenset(parsed.request_features),
                    )
                )
        if shadow is not None:
            self.shadow.submit(
                ShadowJob(request_id, at, loaded.name, SHADOW, shadow, parsed, as_of_us)
            )


def _response(model: str, request_id: str, groups: list[Group], parsed: PredictInput) -> bytes:
    rows = parsed.rows
    unscored: npt.NDArray[np.bool_] | None = None
    if len(groups) == 1:
        group = groups[0]
        assert group.scores is not None  # noqa: S101 - scored
        scores: list[Any] = group.scores.tolist()  # floats, None where unscored (below)
        versions = [group.version.version] * rows
        aliases = [group.alias] * rows
        missing = missing_names(group)
        unscored = group.unscored
    else:
        merged = np.empty(rows, dtype=np.float64)
        versions, aliases, missing = [0] * rows, [""] * rows, [[] for _ in range(rows)]
        for group in groups:
            assert group.scores is not None  # noqa: S101 - scored
            merged[group.rows] = group.scores
            if group.unscored is not None:
                if unscored is None:
                    unscored = np.zeros(rows, dtype=bool)
                unscored[group.rows] = group.unscored
            for row, names in zip(group.rows.tolist(), missing_names(group), strict=True):
                versions[row], aliases[row], missing[row] = (
                    group.version.version,
                    group.alias,
                    names,
                )
        scores = merged.tolist()
    reasons: list[str | None]
    if unscored is None:
        statuses, reasons = [SCORED] * rows, [None] * rows
    else:
        flags = unscored.tolist()
        scores = [None if flag else score for score, flag in zip(scores, flags, strict=True)]
        statuses = [UNSCORED if flag else SCORED for flag in flags]
        reasons = [UNSCORED_REASON if flag else None for flag in flags]
    payload: dict[str, Any] = {
        "model": model,
        "request_id": request_id,
        "scores": scores,
        "statuses": statuses,
        "reasons": reasons,
        "versions": versions,
        "aliases": aliases,
        "missing": missing,
    }
    if parsed.return_features:
        payload["features"] = _features(groups, rows)
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def _features(groups: list[Group], rows: int) -> dict[str, list[float | None]]:
    """Model feature name -> scored value per row (NaN -> null); a row whose version lacks a
    feature gets null."""
    names = dict.fromkeys(name for group in groups for name in group.version.names)
    out = {}
    for name in names:
        column = np.full(rows, np.nan)
        for group in groups:
            index = group.version.index.get(name)
            if index is not None and group.matrix is not None:
                column[group.rows] = group.matrix[:, index]
        out[name] = column.tolist()
    return out
