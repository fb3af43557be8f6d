"""Validation metrics in numpy alone, with the definitions scikit-learn uses.

The promotion gate compares these numbers across versions, so they must mean exactly what
people expect: `roc_auc` equals `sklearn.metrics.roc_auc_score` (ties count one half) and
`average_precision` equals `sklearn.metrics.average_precision_score` (a step-wise sum over
distinct thresholds, not an interpolated area).

>>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
>>> average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.8333333333333333
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["LOGLOSS_EPS", "average_precision", "log_loss", "mae", "rmse", "roc_auc"]

ArrayLike = npt.NDArray[np.floating] | npt.NDArray[np.integer] | Sequence[float]
LOGLOSS_EPS = 1e-15  # probabilities are clipped to [eps, 1 - eps]: one sure mistake is not inf


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative,
    ties counting one half — from average ranks (Mann–Whitney U), O(n log n)."""
    labels, scores = _binary(y_true, y_score)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            "ROC AUC needs both classes among the labels; these have only "
            f"{'positives' if negatives == 0 else 'negatives'}"
        )
    ranks = _average_ranks(scores)
    u = ranks[labels == 1].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def average_precision(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """AP = sum over distinct thresholds (descending) of (R_n - R_{n-1}) * P_n."""
    labels, scores = _binary(y_true, y_score)
    positives = int(labels.sum())
    if positives == 0:
        raise ValueError("average precision needs at least one positive label")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # The last index of each group of equal scores: one point per distinct threshold.
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_positives = np.cumsum(sorted_labels)[ends]
    precision = true_positives / (ends + 1)
    recall_steps = np.diff(np.r_[0.0, true_positives]) / positives
    return float(np.sum(recall_steps * precision))


def log_loss(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean negative log-likelihood of binary labels under predicted probabilities."""
    labels, probabilities = _binary(y_true, y_prob)
    p = np.clip(probabilities, LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    truth, predicted = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((truth - predicted) ** 2)))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    truth, predicted = _pair(y_true, y_pred)
    return float(np.mean(np.abs(truth - predicted)))


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    counts = np.diff(np.r_[starts, values.size])
    # A group spanning 0-based positions s..s+c-1 has 1-based ranks s+1..s+c, mean s + (c+1)/2.
    group_ranks = starts + (counts + 1) / 2
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(group_ranks, counts)
    return ranks


def _pair(
    first: ArrayLike, second: ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"expected two 1-d arrays of one length, got shapes {a.shape}, {b.shape}")
    if a.size == 0:
        raise ValueError("no values to score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("labels and predictions must be finite (found NaN or inf)")
    return a, b


def _binary(
    y_true: ArrayLike, y_score: ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    labels, scores = _pair(y_true, y_score)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"binary labels must be 0 or 1, found {sorted(set(labels.tolist()))[:5]}")
    return labels, scores
