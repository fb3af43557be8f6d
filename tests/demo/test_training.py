"""The demo's training rows carry the request field of the request-time feature, and its
with/without comparison says both AUCs and the difference."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from demo.data import Population, StreamConfig
from demo.training import Comparison, entity_rows


def test_entity_rows_carry_each_transactions_amount() -> None:
    stream = Population(StreamConfig(users=20, merchants=10, seed=3)).transactions(
        0, 3_600_000_000, np.random.default_rng(3)
    )
    labels = [orjson.loads(value) for _, value in stream.labels("2026-01-01T00:00:00+00:00")]
    rows = entity_rows(labels, 0)
    assert rows.column("amount").to_pylist() == stream.amount.tolist()
    assert rows.column("is_fraud").to_pylist() == stream.fraud.tolist()
    assert rows.schema.field("amount").type == "double"


class _Version:
    def __init__(self, ref: str, auc: float) -> None:
        self.ref = ref
        self.metrics: dict[str, Any] = {"auc": auc}


def test_the_comparison_says_both_aucs_and_the_gain() -> None:
    without: Any = _Version("fraud@1", 0.9)
    with_added: Any = _Version("fraud_realtime@1", 0.95)
    comparison = Comparison(without, with_added, ["amount_vs_user_mean:amount_vs_user_mean_24h"])
    assert abs(comparison.gain - 0.05) < 1e-12
    assert comparison.describe() == (
        "holdout AUC without the added features 0.900 (fraud@1), with them 0.950 "
        "(fraud_realtime@1: + amount_vs_user_mean_24h): +0.050"
    )
