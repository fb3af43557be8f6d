"""The demo's synthetic card transactions, with a planted fraud pattern; the same seed gives the
same stream.

Normal users spend around their own level, mostly at a few favourite merchants, about
`txns_per_user_day` times a day. Now and then a user goes on a spree: a few purchases minutes
apart at new places, for usual amounts. A stolen card is a burst too: 3 to 15 transactions about
a minute apart, mostly at a small set of risky merchants, for high amounts, often opened by a
tiny "card test". Fraud bursts are labelled fraud, nothing else is: the windowed features
(counts and maxima over 10 minutes, distinct merchants over a day, the last amount against the
user's mean, the merchant's usual ticket) can tell them apart, and the demo checks a model
learns to.

>>> population = Population(StreamConfig(users=50, merchants=20, seed=1))
>>> stream = population.transactions(0, 86_400_000_000, np.random.default_rng(1))
>>> bool((np.diff(stream.ts_us) >= 0).all() and 0 < stream.fraud.mean() < 0.5)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["Population", "StreamConfig", "Transactions"]

DAY_US = 86_400_000_000
_FAVOURITES = 4  # merchants a user mostly goes to
_FAVOURITE_SHARE = 0.8
_RISKY_SHARE = 0.08  # of merchants: where stolen cards are mostly used
_RISKY_CHOICE = 0.6  # of fraud transactions at a risky merchant
_CARD_TEST_SHARE = 0.4  # of fraud bursts opened by a tiny amount
_SPREE_SHARE = 0.08  # of normal transactions that come in sprees


@dataclass(frozen=True)
class StreamConfig:
    users: int = 5_000
    merchants: int = 500
    txns_per_user_day: float = 12.0
    fraud_share: float = 0.03  # of transactions, roughly
    seed: int = 42


@dataclass(frozen=True)
class Transactions:
    """Columns of transactions sorted by time; `fraud` is the label."""

    ts_us: npt.NDArray[np.int64]
    user: npt.NDArray[np.int64]
    merchant: npt.NDArray[np.int64]
    amount: npt.NDArray[np.float64]
    fraud: npt.NDArray[np.int8]
    first_id: int = 0  # transaction ids run from here

    def __len__(self) -> int:
        return int(self.ts_us.size)

    def with_times(self, ts_us: npt.NDArray[np.int64]) -> Transactions:
        """The same transactions at other times (the order must stay the same)."""
        return Transactions(ts_us, self.user, self.merchant, self.amount, self.fraud, self.first_id)

    def without_users_of(self, other: Transactions) -> Transactions:
        """These transactions minus those of `other`'s users."""
        keep = ~np.isin(self.user, other.user)
        return Transactions(
            self.ts_us[keep],
            self.user[keep],
            self.merchant[keep],
            self.amount[keep],
            self.fraud[keep],
            self.first_id,
        )

    def user_ids(self) -> list[str]:
        return [user_id(u) for u in self.user.tolist()]

    def merchant_ids(self) -> list[str]:
        return [merchant_id(m) for m in self.merchant.tolist()]

    def iso_times(self) -> list[str]:
        return [str(t) for t in np.datetime_as_string(self.ts_us.astype("datetime64[us]"), "us")]

    def events(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, JSON value) per transaction, keyed by user: a user's events stay in order."""
        users, merchants = self.user_ids(), self.merchant_ids()
        amounts = self.amount.tolist()
        for i, ts in enumerate(self.iso_times()):
            event = {
                "txn_id": f"t{self.first_id + i}",
                "user_id": users[i],
                "merchant_id": merchants[i],
                "amount": amounts[i],
                "ts": ts + "Z",
            }
            yield users[i].encode(), orjson.dumps(event)

    def labels(self, at: str) -> Iterator[tuple[bytes, bytes]]:
        """(key, JSON value) of each transaction's label, known at `at` (ISO 8601), in the
        monitor's format: the entities it was scored for, the label and its time; plus the
        transaction's own time, which a training set joins at, and its amount, the request field
        a request-time feature reads."""
        users, merchants, fraud = self.user_ids(), self.merchant_ids(), self.fraud.tolist()
        amounts = self.amount.tolist()
        for i, ts in enumerate(self.iso_times()):
            label = {
                "entities": {"user_id": users[i], "merchant_id": merchants[i]},
                "label": fraud[i],
                "at": at,
                "txn_id": f"t{self.first_id + i}",
                "transaction_ts": ts + "Z",
                "amount": amounts[i],
            }
            yield users[i].encode(), orjson.dumps(label)


def user_id(index: int) -> str:
    return f"u{index:06d}"


def merchant_id(index: int) -> str:
    return f"m{index:05d}"


class Population:
    """Users and merchants with fixed habits; `transactions` draws any period of their life."""

    def __init__(self, config: StreamConfig) -> None:
        if config.users < 10 or config.merchants < 10:
            raise ValueError("the demo needs at least 10 users and 10 merchants")
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.activity = rng.lognormal(0.0, 0.5, config.users)
        self.activity /= self.activity.sum()
        self.level = rng.normal(np.log(40.0), 0.4, config.users)  # log of a user's usual amount
        ranks = np.arange(1, config.merchants + 1, dtype=np.float64)
        self.popularity = ranks**-0.8 / (ranks**-0.8).sum()
        self.favourites = rng.choice(
            config.merchants, size=(config.users, _FAVOURITES), p=self.popularity
        )
        self.ticket = rng.normal(0.0, 0.3, config.merchants)  # log of a merchant's ticket size
        risky = max(1, round(config.merchants * _RISKY_SHARE))
        self.risky = rng.choice(config.merchants, size=risky, replace=False)
        self._next_id = 0

    def transactions(
        self, start_us: int, end_us: int, rng: np.random.Generator, amount_factor: float = 1.0
    ) -> Transactions:
        """Normal spending and fraud bursts in [start_us, end_us), amounts times `amount_factor`."""
        config = self.config
        span = end_us - start_us
        count = rng.poisson(config.users * config.txns_per_user_day * span / DAY_US)
        sprees = self._sprees(rng.poisson(count * _SPREE_SHARE / _SPREE.mean), rng)
        normal = self._normal(count - len(sprees.ts), rng)
        fraud = self._fraud(rng.poisson(count * config.fraud_share / _FRAUD.mean), rng)
        parts = (normal, sprees, fraud)
        ts = (start_us + np.concatenate([part.ts for part in parts]) * span).astype(np.int64)
        ts += np.concatenate([part.offsets_us for part in parts])
        labels = np.repeat(np.array([0, 0, 1], np.int8), [len(part.ts) for part in parts])
        keep = ts < end_us  # a burst that starts near the end may run past it
        order = np.argsort(ts[keep], kind="stable")

        def column(name: str) -> npt.NDArray[Any]:
            return np.concatenate([getattr(part, name) for part in parts])[keep][order]

        out = Transactions(
            ts[keep][order],
            column("users"),
            column("merchants"),
            np.round(column("amounts") * amount_factor, 2),
            labels[keep][order],
            self._next_id,
        )
        self._next_id += len(out)
        return out

    def _normal(self, count: int, rng: np.random.Generator) -> _Draw:
        config = self.config
        users = rng.choice(config.users, size=count, p=self.activity)
        favourite = self.favourites[users, rng.integers(0, _FAVOURITES, count)]
        anywhere = rng.choice(config.merchants, size=count, p=self.popularity)
        merchants = np.where(rng.random(count) < _FAVOURITE_SHARE, favourite, anywhere)
        where = rng.random(count)
        return _Draw(where, users, merchants, self._usual(users, merchants, rng), _zeros(count))

    def _sprees(self, count: int, rng: np.random.Generator) -> _Draw:
        """Honest shopping sprees: a few purchases minutes apart at new places, usual amounts —
        what makes a burst alone not proof of fraud."""
        users, step, draw = _burst_shape(_SPREE, count, rng, self.activity)
        merchants = rng.choice(self.config.merchants, size=len(step), p=self.popularity)
        return _Draw(draw.ts, users, merchants, self._usual(users, merchants, rng), draw.offsets_us)

    def _fraud(self, count: int, rng: np.random.Generator) -> _Draw:
        """Stolen cards: bursts at (mostly) risky merchants for high amounts, often opened by
        a tiny card test. Any user may be the victim."""
        uniform = np.full(self.config.users, 1.0 / self.config.users)
        users, step, draw = _burst_shape(_FRAUD, count, rng, uniform)
        total = len(step)
        risky = self.risky[rng.integers(0, len(self.risky), total)]
        anywhere = rng.choice(self.config.merchants, size=total, p=self.popularity)
        merchants = np.where(rng.random(total) < _RISKY_CHOICE, risky, anywhere)
        amounts = rng.lognormal(np.log(150.0), 0.9, total)
        card_test = (step == 0) & (rng.random(total) < _CARD_TEST_SHARE)
        amounts[card_test] = rng.uniform(0.5, 3.0, int(card_test.sum()))
        return _Draw(draw.ts, users, merchants, amounts, draw.offsets_us)

    def _usual(
        self,
        users: npt.NDArray[np.int64],
        merchants: npt.NDArray[np.int64],
        rng: np.random.Generator,
    ) -> npt.NDArray[np.float64]:
        noise = rng.normal(0, 0.5, len(users))
        return np.maximum(np.exp(self.level[users] + self.ticket[merchants] + noise), 0.5)


@dataclass(frozen=True)
class _Burst:
    least: int  # transactions: least + Poisson(extra), at most `most`
    extra: float
    most: int
    gap_us: float  # mean gap between two of them

    @property
    def mean(self) -> float:
        return self.least + self.extra


_SPREE = _Burst(2, 1.5, 6, 120_000_000)  # 2-6 purchases, 2 minutes apart on average
_FRAUD = _Burst(3, 4.0, 15, 60_000_000)  # 3-15 transactions, a minute apart on average


def _burst_shape(
    shape: _Burst,
    count: int,
    rng: np.random.Generator,
    activity: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], _Draw]:
    """`count` bursts: each transaction's user, its step in the burst (0 first), and as a draw
    the burst's start (0..1 of the period) and the transaction's distance from it (µs)."""
    sizes = np.minimum(shape.least + rng.poisson(shape.extra, count), shape.most)
    total = int(sizes.sum())
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    step = np.arange(total) - first
    gaps = rng.exponential(shape.gap_us, total)
    gaps[step == 0] = 0.0
    # Cumulative gaps within each burst: the running total minus its value at the burst's start.
    running = np.cumsum(gaps)
    offsets = (running - running[first]).astype(np.int64) if total else _zeros(0)
    users = np.repeat(rng.choice(len(activity), size=count, p=activity), sizes)
    empty = np.zeros(0, np.int64)
    return (
        users,
        step,
        _Draw(np.repeat(rng.random(count), sizes), users, empty, np.zeros(0), offsets),
    )


def _zeros(count: int) -> npt.NDArray[np.int64]:
    return np.zeros(count, np.int64)


@dataclass(frozen=True)
class _Draw:
    ts: npt.NDArray[np.float64]  # where in the period, 0..1
    users: npt.NDArray[np.int64]
    merchants: npt.NDArray[np.int64]
    amounts: npt.NDArray[np.float64]
    offsets_us: npt.NDArray[np.int64]  # from `ts` (bursts only)
