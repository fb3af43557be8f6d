"""A window against its reference: statuses, the missing bin, too few rows."""

from __future__ import annotations

import numpy as np
import pytest

from featurestore.config import DriftThresholds, MonitorSettings
from featurestore.drift import accumulate, compare
from featurestore.drift.compare import check_reference
from featurestore.models.profile import column_profile

RNG = np.random.default_rng(3)
TRAINING = RNG.lognormal(3, 1, 20_000)
REFERENCE = column_profile(TRAINING)


def window(values: np.ndarray) -> np.ndarray:
    return accumulate(REFERENCE["edges"], values)


def test_same_distribution_is_ok_and_a_tripled_one_alerts() -> None:
    same = compare(REFERENCE, window(RNG.lognormal(3, 1, 1000)), DriftThresholds(), 200)
    assert same.status == "ok" and same.breaches == ()
    assert same.psi is not None and same.psi < 0.05 and same.js is not None and same.js < 0.1
    shifted = compare(REFERENCE, window(RNG.lognormal(3, 1, 1000) * 3), DriftThresholds(), 200)
    assert shifted.status == "alert" and set(shifted.breaches) == {"psi", "js"}
    assert shifted.ks is not None and shifted.ks > 0.3


def test_few_rows_are_insufficient_never_drift() -> None:
    few = compare(REFERENCE, window(RNG.lognormal(3, 1, 50) * 10), DriftThresholds(), 200)
    assert few.status == "insufficient" and few.psi is None and few.n == 50


def test_a_column_going_missing_is_drift() -> None:
    drift = compare(REFERENCE, window(np.full(500, np.nan)), DriftThresholds(), 200)
    assert drift.status == "alert" and drift.missing_rate == 1.0
    assert drift.ks is None  # no present values to order


def test_warn_between_the_psi_thresholds_and_overrides_per_feature() -> None:
    config = MonitorSettings(
        thresholds={"psi_warn": 0.0, "js_alert": None},
        feature_thresholds={"amount": {"psi_alert": 10.0}},
    )
    assert config.thresholds_for("amount").psi_warn == 0.0  # inherited
    assert config.thresholds_for("amount").psi_alert == 10.0
    shifted = window(RNG.lognormal(3, 1, 1000) * 3)
    assert compare(REFERENCE, shifted, config.thresholds_for("amount"), 200).status == "warn"
    assert compare(REFERENCE, shifted, config.thresholds_for("other"), 200).status == "alert"


def test_a_reference_whose_counts_do_not_fit_its_edges_is_refused() -> None:
    with pytest.raises(ValueError, match="2 counts for 2 edges"):
        check_reference({"edges": [0.0, 1.0], "counts": [1, 2], "count": 3}, "x")
