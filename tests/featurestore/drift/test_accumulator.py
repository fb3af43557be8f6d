"""Window accumulators against brute force, and the merge laws sliding windows rely on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.drift import accumulate, accumulate_groups, merge, summarise
from featurestore.drift.accumulator import empty, merge_all
from featurestore.models.profile import bin_counts

EDGES = [-10.0, -1.0, 0.0, 2.5, 7.0, 100.0]
# Integers (as floats) and NaN: sums of them are exact, so the merge laws hold exactly.
values = st.lists(
    st.one_of(st.integers(-500, 500).map(float), st.just(math.nan)), min_size=0, max_size=40
)


def by_definition(edges: list[float], column: list[float]) -> list[float]:
    present = [v for v in column if not math.isnan(v)]
    finite = [v for v in present if math.isfinite(v)]
    return [
        float(len(column)),
        float(len(column) - len(present)),
        float(len(finite)),
        float(sum(finite)),
        float(sum(v * v for v in finite)),
        min(finite, default=math.inf),
        max(finite, default=-math.inf),
        *bin_counts(edges, present).astype(float).tolist(),
    ]


@given(values)
def test_accumulate_by_definition(column: list[float]) -> None:
    assert accumulate(EDGES, column).tolist() == by_definition(EDGES, column)


@given(values, values, values)
def test_merge_is_associative_and_commutative(
    a: list[float], b: list[float], c: list[float]
) -> None:
    x, y, z = (accumulate(EDGES, v) for v in (a, b, c))
    assert merge(merge(x, y), z).tolist() == merge(x, merge(y, z)).tolist()
    assert merge(x, y).tolist() == merge(y, x).tolist()
    assert merge(x, empty(len(EDGES) - 1)).tolist() == x.tolist()  # the identity


@given(values, values)
def test_the_merge_of_two_windows_is_the_window_of_both(a: list[float], b: list[float]) -> None:
    assert merge(accumulate(EDGES, a), accumulate(EDGES, b)).tolist() == (
        accumulate(EDGES, a + b).tolist()
    )


@given(st.lists(st.tuples(st.integers(0, 4), st.floats(-1e3, 1e3)), max_size=60))
def test_groups_are_the_accumulators_of_each_group(rows: list[tuple[int, float]]) -> None:
    groups = np.array([g for g, _ in rows], dtype=np.int64)
    column = np.array([v for _, v in rows])
    out = accumulate_groups(EDGES, column, groups, 5)
    for g in range(5):
        want = accumulate(EDGES, column[groups == g])
        np.testing.assert_allclose(out[g], want, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(merge_all(out, len(EDGES) - 1), accumulate(EDGES, column), atol=1e-6)


def test_summary_and_edge_cases() -> None:
    summary = summarise(accumulate(EDGES, [1.0, 3.0, math.nan, math.inf]))
    assert (summary.n, summary.missing, summary.present) == (4, 1, 3)
    assert summary.missing_rate == 0.25
    assert summary.mean == 2.0 and summary.std == pytest.approx(1.0)  # the finite values
    assert (summary.min, summary.max) == (1.0, 3.0)
    assert summary.counts.tolist() == [0, 0, 1, 1, 1]  # inf counts in the last bin
    nothing = summarise(accumulate(EDGES, []))
    assert (nothing.n, nothing.missing_rate, nothing.mean, nothing.min) == (0, None, None, None)
    # A constant column has one edge and one bin; no edges (all missing in training): no bins.
    assert accumulate([5.0], [5.0, 6.0]).tolist()[7:] == [2.0]
    assert accumulate([], [1.0, math.nan]).tolist()[:2] == [2.0, 1.0]
    with pytest.raises(ValueError, match="cannot merge"):
        merge(accumulate([0.0, 1.0], []), accumulate(EDGES, []))
