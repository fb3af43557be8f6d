"""Shadow scoring: the rows a request served, scored again by the `shadow` alias's version, off
the response path.

A request only offers the job to a bounded queue (dropped and counted when full); one
background thread reads the features (at the request's `as_of`, so both versions see the same
windows) and scores them, and the results go to the prediction log with role "shadow". Nothing
here can slow, fail or change a response.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from featurestore.online import OnlineStore
from featurestore.prediction_records import SHADOW_ROLE, LogBatch
from serving.inputs import PredictInput
from serving.metrics import ServingMetrics
from serving.model_cache import LoadedVersion
from serving.prediction_log import PredictionLog
from serving.scoring import Group, score_groups

__all__ = ["ShadowJob", "ShadowScorer"]

log = logging.getLogger(__name__)

_QUEUE = 1_000  # requests waiting for shadow scoring
_STOP = None


@dataclass(frozen=True)
class ShadowJob:
    request_id: str
    at: datetime
    model: str
    alias: str
    version: LoadedVersion
    request: PredictInput
    as_of_us: int


class ShadowScorer:
    def __init__(self, online: OnlineStore, prediction_log: PredictionLog, metrics: ServingMetrics):
        self.online = online
        self.prediction_log = prediction_log
        self.metrics = metrics
        self._jobs: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=_QUEUE)
        self._thread: threading.Thread | None = None

    def submit(self, job: ShadowJob) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.metrics.shadow_dropped.labels("queue_full").inc()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fstore-shadow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Score what is queued, then stop (before the prediction log flushes)."""
        if self._thread is None:
            return
        self._jobs.put(_STOP)
        self._thread.join(timeout=30)
        self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            try:
                self.score(job)
            except Exception:
                # A shadow version failing (Redis away, a bad model) must not stop the thread:
                # it is logged and counted, and the served responses never notice.
                log.exception("shadow scoring of %s v%d failed", job.model, job.version.version)
                self.metrics.shadow_dropped.labels("error").inc()

    def score(self, job: ShadowJob) -> None:
        rows = np.arange(job.request.rows, dtype=np.intp)
        group = Group(job.alias, job.version, rows)
        score_groups(self.online, [group], job.request, job.as_of_us)
        logged = group.logged()  # the rows it scored: not those whose every feature is missing
        if logged is None:
            return
        self.metrics.predictions.labels(
            job.model, str(job.version.version), job.alias, SHADOW_ROLE
        ).inc(group.scored_rows)
        self.prediction_log.submit(
            LogBatch(
                request_id=job.request_id,
                at=job.at,
                model=job.model,
                role=SHADOW_ROLE,
                entities=job.request.entities,
                key_columns=job.version.entity_keys,
                groups=(logged,),
                request_features=frozenset(job.request.request_features),
            )
        )
