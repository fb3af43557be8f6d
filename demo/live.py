"""Live transactions: the stream goes on after the history, published while the server runs.

Serving reads features at the present, so live transactions must happen now. The history stops
`CATCH_UP_MINUTES` before it is generated; the first live batch is the population's life from
there to the moment it is published, squeezed into the second before (order kept), so the hour
and day windows hold as many transactions as they would have. Later batches are a few more
minutes of the users the first one left out, so their 10-minute windows stay true too. Scored
right after the worker applied it, a live transaction sees its features as a training row at
its time did: the distribution the model was trained on, which the drift monitor checks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from demo.data import Population, Transactions
from demo.ingest import wait_ingested
from demo.topics import end_offsets, publish
from demo.workspace import Workspace
from featurestore.online import OnlineStore
from featurestore.timestamps import from_us, to_us

__all__ = ["CATCH_UP_MINUTES", "LiveStream", "now_us"]

CATCH_UP_MINUTES = 10
_LATER_MINUTES = 5  # of a later batch
_MINUTE_US = 60_000_000
_SQUEEZE_US = 1_000_000  # a batch's transactions all fall within this span before publishing


def now_us() -> int:
    return to_us(datetime.now(UTC))


class LiveStream:
    def __init__(
        self,
        workspace: Workspace,
        population: Population,
        rng: np.random.Generator,
        views: list[tuple[str, int]],
        alive: Callable[[], None],
        start_us: int,
    ) -> None:
        self.workspace = workspace
        self.population = population
        self.rng = rng
        self.views = views
        self.alive = alive
        self.online = OnlineStore(workspace.settings.redis)
        self.simulated_us = start_us  # where the population's life has got to
        self.caught_up = False

    def next_batch(
        self, amount_factor: float = 1.0, apart_from: Transactions | None = None
    ) -> Transactions:
        """Publish the next batch (without the users of `apart_from`) as happening now;
        return it once the worker has applied it. The first one catches up with the present."""
        wall = now_us()
        span = _LATER_MINUTES * _MINUTE_US if self.caught_up else wall - self.simulated_us
        self.caught_up = True
        batch = self.population.transactions(
            self.simulated_us, self.simulated_us + span, self.rng, amount_factor
        )
        if apart_from is not None:
            batch = batch.without_users_of(apart_from)
        start, self.simulated_us = self.simulated_us, self.simulated_us + span
        squeezed = wall - _SQUEEZE_US + (batch.ts_us - start) * _SQUEEZE_US // span
        batch = batch.with_times(squeezed.astype(np.int64))
        kafka, topic = self.workspace.settings.kafka, self.workspace.topics.transactions
        publish(kafka, topic, batch.events())
        wait_ingested(self.online, self.views, end_offsets(kafka, topic), self.alive, 120.0)
        return batch

    def publish_labels(self, batch: Transactions) -> None:
        """The batch's labels, known now (after its transactions were scored)."""
        at = from_us(now_us()).isoformat()
        publish(self.workspace.settings.kafka, self.workspace.topics.labels, batch.labels(at))

    @staticmethod
    def rows(batch: Transactions, rng: np.random.Generator) -> list[tuple[str, str]]:
        """The batch's (user, merchant) pairs in a random order: what a scoring call names."""
        pairs = list(zip(batch.user_ids(), batch.merchant_ids(), strict=True))
        order = rng.permutation(len(pairs)).tolist()
        return [pairs[i] for i in order]
