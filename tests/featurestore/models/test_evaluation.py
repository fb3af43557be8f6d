"""Metrics against brute-force definitions on random inputs (ties included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.models.evaluation import (
    LOGLOSS_EPS,
    average_precision,
    log_loss,
    mae,
    rmse,
    roc_auc,
)

# Few distinct scores, so ties are common (the hard part of both definitions).
scores = st.integers(0, 6).map(lambda k: k / 6)
labelled = st.lists(st.tuples(st.integers(0, 1), scores), min_size=1, max_size=40)


def both_classes(rows: list[tuple[int, float]]) -> bool:
    return len({label for label, _ in rows}) == 2


def brute_auc(rows: list[tuple[int, float]]) -> float:
    """The fraction of (positive, negative) pairs ordered right, ties counting one half."""
    positives = [s for label, s in rows if label == 1]
    negatives = [s for label, s in rows if label == 0]
    right = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return right / (len(positives) * len(negatives))


def brute_average_precision(rows: list[tuple[int, float]]) -> float:
    """sklearn's definition: for each distinct threshold t, high to low, the precision of
    "score >= t" times the share of all positives that have score exactly t."""
    total = sum(label for label, _ in rows)
    ap = 0.0
    for t in sorted({s for _, s in rows}, reverse=True):
        selected = [label for label, s in rows if s >= t]
        new_positives = sum(label for label, s in rows if s == t)
        ap += (sum(selected) / len(selected)) * (new_positives / total)
    return ap


@given(labelled.filter(both_classes))
def test_auc_is_the_fraction_of_pairs_ordered_right(rows: list[tuple[int, float]]) -> None:
    labels, values = zip(*rows, strict=True)
    assert roc_auc(np.array(labels), np.array(values)) == pytest.approx(brute_auc(rows), abs=1e-12)


@given(labelled.filter(lambda rows: any(label for label, _ in rows)))
def test_average_precision_is_sklearns_step_sum(rows: list[tuple[int, float]]) -> None:
    labels, values = zip(*rows, strict=True)
    assert average_precision(list(labels), list(values)) == pytest.approx(
        brute_average_precision(rows), abs=1e-12
    )


@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=1, max_size=30))
def test_log_loss_is_the_mean_clipped_negative_log_likelihood(
    rows: list[tuple[int, float]],
) -> None:
    labels, probabilities = zip(*rows, strict=True)
    expected = 0.0
    for label, p in rows:
        p = min(max(p, LOGLOSS_EPS), 1 - LOGLOSS_EPS)
        expected -= math.log(p) if label == 1 else math.log(1 - p)
    assert log_loss(labels, probabilities) == pytest.approx(expected / len(rows), rel=1e-9)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=30))
def test_rmse_and_mae(rows: list[tuple[float, float]]) -> None:
    truth, predicted = zip(*rows, strict=True)
    errors = [t - p for t, p in rows]
    assert rmse(truth, predicted) == pytest.approx(
        math.sqrt(sum(e * e for e in errors) / len(errors)), rel=1e-9, abs=1e-9
    )
    assert mae(truth, predicted) == pytest.approx(
        sum(abs(e) for e in errors) / len(errors), rel=1e-9, abs=1e-9
    )


def test_known_values_and_edges() -> None:
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.3]) == 0.0
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert log_loss([1], [1.0]) == pytest.approx(-math.log(1 - LOGLOSS_EPS))


def test_undefined_metrics_are_refused() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="at least one positive"):
        average_precision([0, 0], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        rmse([1.0], [float("nan")])
    with pytest.raises(ValueError, match="shapes"):
        mae([1.0, 2.0], [1.0])
