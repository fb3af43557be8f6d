"""The single-row scorer gives exactly what `Booster.predict` gives, for every kind of model."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.single_row import SingleRowScorer

FEATURES = 5


def _train(objective: str, best_iteration: bool = False) -> lgb.Booster:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, FEATURES))
    X[rng.random(X.shape) < 0.15] = np.nan
    signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) ** 2
    label = (signal > 0.3).astype(float) if objective == "binary" else signal
    params = {"objective": objective, "verbose": -1, "num_leaves": 15, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(X, label), num_boost_round=40)
    if best_iteration:
        booster.best_iteration = 12  # as early stopping leaves it: predict() stops there
    return booster


BOOSTERS = {
    "binary": _train("binary"),
    "regression": _train("regression"),
    # A best iteration short of the last: predict() stops there, and so must we.
    "early_stopped": _train("binary", best_iteration=True),
    # As the server loads models: from the registry's text artifact.
    "from_text": lgb.Booster(model_str=_train("regression").model_to_string()),
}

values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.just(float("nan")),
    st.just(0.0),
)


@pytest.mark.parametrize("kind", sorted(BOOSTERS))
@settings(max_examples=150, deadline=None)
@given(row=st.lists(values, min_size=FEATURES, max_size=FEATURES))
def test_scores_match_booster_predict(kind: str, row: list[float]) -> None:
    booster = BOOSTERS[kind]
    data = np.array(row)
    expected = booster.predict(data[None, :], num_threads=1)[0]
    assert SingleRowScorer(booster)(data) == expected


def test_a_row_of_another_length_is_refused() -> None:
    scorer = SingleRowScorer(BOOSTERS["binary"])
    with pytest.raises(ValueError, match=f"a row of {FEATURES} floats"):
        scorer(np.zeros(FEATURES + 1))


def test_a_multiclass_model_has_no_single_row_scorer() -> None:
    X = np.random.default_rng(1).normal(size=(90, 2))
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "min_data_in_leaf": 2}
    booster = lgb.train(params, lgb.Dataset(X, np.arange(90) % 3), num_boost_round=2)
    assert SingleRowScorer.of(booster) is None
    assert SingleRowScorer.of(BOOSTERS["binary"]) is not None


def test_threads_scoring_side_by_side_each_get_their_own_row_s_score() -> None:
    booster = BOOSTERS["regression"]
    scorer = SingleRowScorer(booster)
    rows = np.random.default_rng(3).normal(size=(64, FEATURES))
    expected = booster.predict(rows, num_threads=1)
    wrong: list[int] = []

    def score(offset: int) -> None:
        for _ in range(50):
            for i in range(offset, len(rows), 4):
                if scorer(rows[i]) != expected[i]:
                    wrong.append(i)

    # `result()` re-raises in the test whatever a scoring thread raised.
    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(score, k) for k in range(4)]:
            done.result(timeout=120)
    assert wrong == []


def test_a_scorer_outlives_nothing_it_needs() -> None:
    """The scorer keeps its booster's C state alive: scoring after the caller dropped the
    booster still works, and collecting the scorer frees its config without error."""
    booster = _train("regression")
    row = np.linspace(-1, 1, FEATURES)
    expected = booster.predict(row[None, :], num_threads=1)[0]
    scorer = SingleRowScorer(booster)
    del booster
    gc.collect()
    assert scorer(row) == expected
    del scorer
    gc.collect()
