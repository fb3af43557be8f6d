"""The demo's feature repo (the fraud template) loads: two views on one topic and the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import featurestore
from demo.steps import find_repo
from featurestore import load_repo
from featurestore.on_demand import compute
from featurestore.scaffold import template_dir

REPO = template_dir("fraud")


def test_the_fraud_repo_defines_user_and_merchant_views_and_a_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAUD_TOPIC", "run.transactions")
    contents = load_repo(REPO)
    assert set(contents.views) == {"user_txn", "merchant_txn"}
    user, merchant = contents.views["user_txn"], contents.views["merchant_txn"]
    assert user.join_keys == ["user_id"] and merchant.join_keys == ["merchant_id"]
    assert user.source.topic == merchant.source.topic == "run.transactions"
    for window in ("10m", "1h", "24h"):
        for prefix in ("count", "amount_sum", "amount_mean", "amount_max"):
            assert f"{prefix}_{window}" in user.feature_names()
    assert {"amount_last_24h", "distinct_merchants_24h"} <= set(user.feature_names())
    assert {"count_1h", "amount_mean_1h"} <= set(merchant.feature_names())
    assert len(contents.services["fraud_detection"].refs()) == 20


def test_the_demo_finds_it_inside_the_package_whatever_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_repo() == REPO
    assert REPO.is_relative_to(Path(featurestore.__file__).parent)  # package data: in the wheel


def test_examples_fraud_is_the_same_repo() -> None:
    """examples/fraud stays, for the docker-compose stack and readers of the checkout."""
    examples = Path(__file__).resolve().parents[2] / "examples" / "fraud"
    assert examples.resolve() == REPO


def test_the_fraud_repo_has_a_request_time_feature_of_the_amount_against_the_24h_mean() -> None:
    contents = load_repo(REPO)
    feature = contents.on_demand["amount_vs_user_mean"]
    assert feature.request_fields() == {"amount": "float64"}
    assert feature.features == ["user_txn:amount_mean_24h"]
    inputs = {"amount": np.array([90.0, 5.0, 7.0]), "amount_mean_24h": np.array([30.0, np.nan, 0])}
    out = compute(feature, inputs, 3)["amount_vs_user_mean_24h"]
    assert out[0] == 3.0 and np.isnan(out[1:]).all()  # no history: missing, not infinite
    realtime = contents.services["fraud_detection_realtime"].refs()
    assert realtime[-1] == "amount_vs_user_mean:amount_vs_user_mean_24h" and len(realtime) == 22


def test_the_with_model_reads_what_the_realtime_service_adds_and_the_without_does_not() -> None:
    contents = load_repo(REPO)
    base = contents.services["fraud_detection"].refs()
    realtime = contents.services["fraud_detection_realtime"].refs()
    assert set(base) < set(realtime)
    assert [ref for ref in realtime if ref not in base] == [
        "user_txn:amount_p90_24h",
        "amount_vs_user_mean:amount_vs_user_mean_24h",
    ]


def test_one_line_puts_a_richer_aggregation_in_the_with_model_only(tmp_path: Path) -> None:
    """How an aggregation joins the comparison: one line in the template's
    `richer_user_aggregations` (which holds the 90th percentile); here `min` besides."""
    text = (REPO / "features.py").read_text()
    line = "richer_user_aggregations: list[Aggregation] = [\n"
    assert line in text
    richer = text.replace(
        line, line + '    Aggregation(column="amount", function="min", windows=["1h"]),\n'
    )
    (tmp_path / "features.py").write_text(richer)
    contents = load_repo(tmp_path)
    base = contents.services["fraud_detection"].refs()
    added = [r for r in contents.services["fraud_detection_realtime"].refs() if r not in base]
    assert len(base) == 20
    assert added == [
        "user_txn:amount_min_1h",
        "user_txn:amount_p90_24h",
        "amount_vs_user_mean:amount_vs_user_mean_24h",
    ]
