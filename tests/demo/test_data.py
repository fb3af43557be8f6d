"""The demo's synthetic stream: deterministic per seed, with a fraud pattern its features see."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest

import demo
import demo.data
import demo.stepper
from demo.data import DAY_US, Population, StreamConfig
from demo.errors import DemoError
from demo.options import DemoOptions

HOUR_US = DAY_US // 24


def _stream(seed: int) -> demo.Transactions:
    population = Population(StreamConfig(users=500, merchants=100, seed=seed))
    return population.transactions(0, DAY_US, np.random.default_rng(seed))


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    one, again, other = _stream(7), _stream(7), _stream(8)
    assert list(one.events()) == list(again.events())
    assert list(one.events()) != list(other.events())


def test_events_are_time_ordered_json_in_the_repo_schema() -> None:
    stream = _stream(1)
    assert (np.diff(stream.ts_us) >= 0).all()
    assert (stream.ts_us >= 0).all() and (stream.ts_us < DAY_US).all()
    key, value = next(stream.events())
    event = orjson.loads(value)
    assert set(event) == {"txn_id", "user_id", "merchant_id", "amount", "ts"}
    assert key == event["user_id"].encode()
    assert event["ts"].endswith("Z")


def test_fraud_comes_in_bursts_of_high_amounts() -> None:
    stream = _stream(3)
    fraud = stream.fraud == 1
    assert 0.01 < fraud.mean() < 0.08
    assert np.median(stream.amount[fraud]) > 2 * np.median(stream.amount[~fraud])
    # Per transaction: how many of the user's transactions fall in the 10 minutes up to it.
    recent = np.zeros(len(stream))
    for user in np.unique(stream.user):
        index = np.flatnonzero(stream.user == user)
        times = stream.ts_us[index]
        recent[index] = np.arange(len(index)) - np.searchsorted(times, times - HOUR_US // 6) + 1
    assert recent[fraud].mean() > 2 * recent[~fraud].mean()


def test_labels_name_the_scored_entities_and_the_transaction_time() -> None:
    stream = _stream(4)
    labels = [orjson.loads(value) for _, value in stream.labels("2026-01-01T00:00:00+00:00")]
    events = [orjson.loads(value) for _, value in stream.events()]
    assert len(labels) == len(events)
    for label, event in zip(labels, events, strict=True):
        assert label["entities"] == {
            "user_id": event["user_id"],
            "merchant_id": event["merchant_id"],
        }
        assert label["transaction_ts"] == event["ts"]
        assert label["label"] in (0, 1)
    assert sum(label["label"] for label in labels) == int(stream.fraud.sum())


def test_a_later_batch_leaves_out_the_users_of_an_earlier_one() -> None:
    population = Population(StreamConfig(users=500, merchants=100, seed=5))
    rng = np.random.default_rng(5)
    first = population.transactions(0, HOUR_US, rng)
    second = population.transactions(HOUR_US, 2 * HOUR_US, rng).without_users_of(first)
    assert len(second) > 0
    assert not set(second.user.tolist()) & set(first.user.tolist())
    assert second.first_id >= first.first_id + len(first)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (DemoOptions(hours=24), "--hours 24 leaves no labelled rows"),
        (DemoOptions(users=10), "--users 10 is too small"),
        (DemoOptions(min_auc=0.3), "--min-auc 0.3 is not in [0.5, 1)"),
    ],
)
def test_options_that_cannot_work_are_refused(options: DemoOptions, message: str) -> None:
    with pytest.raises(DemoError, match=re.escape(message)):
        options.check()
