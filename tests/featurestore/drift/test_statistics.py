"""The drift statistics against brute-force definitions, on random histograms (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.drift import PSI_EPSILON, js_distance, ks_binned, psi
from featurestore.models.profile import bin_counts


@st.composite
def histogram_pairs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    bins = draw(st.integers(1, 12))
    counts = st.lists(st.integers(0, 1000), min_size=bins, max_size=bins).filter(
        lambda c: sum(c) > 0
    )
    return draw(counts), draw(counts)


def psi_by_definition(reference: list[int], live: list[int]) -> float:
    total_ref, total_live = sum(reference), sum(live)
    out = 0.0
    for r, c in zip(reference, live, strict=True):
        expected = r / total_ref or PSI_EPSILON
        actual = c / total_live or PSI_EPSILON
        out += (actual - expected) * math.log(actual / expected)
    return out


def js_by_definition(reference: list[int], live: list[int]) -> float:
    p = [r / sum(reference) for r in reference]
    q = [c / sum(live) for c in live]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0)

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def ks_by_definition(a: list[float], b: list[float]) -> float:
    """sup over x of |F_a(x) - F_b(x)|, the empirical CDFs, checked at every sample point."""
    return max(
        abs(sum(v <= x for v in a) / len(a) - sum(v <= x for v in b) / len(b)) for x in a + b
    )


@given(histogram_pairs())
def test_psi_is_the_sum_of_its_terms_with_empty_bins_at_epsilon(
    pair: tuple[list[int], list[int]],
) -> None:
    reference, live = pair
    assert psi(reference, live) == pytest.approx(psi_by_definition(reference, live), abs=1e-12)
    assert psi(reference, live) >= 0


@given(histogram_pairs())
def test_js_distance_by_definition_in_base_2(pair: tuple[list[int], list[int]]) -> None:
    reference, live = pair
    value = js_distance(reference, live)
    assert value == pytest.approx(js_by_definition(reference, live), abs=1e-9)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(js_distance(live, reference), abs=1e-12)  # symmetric


@given(histogram_pairs())
def test_binned_ks_is_the_sample_ks_of_the_bin_indices(pair: tuple[list[int], list[int]]) -> None:
    """Each value replaced by its bin: the binned statistic is the exact KS of those samples."""
    reference, live = pair
    a = [float(i) for i, n in enumerate(reference) for _ in range(min(n, 30))]
    b = [float(i) for i, n in enumerate(live) for _ in range(min(n, 30))]
    if not a or not b:
        return
    small_ref = [min(n, 30) for n in reference]
    small_live = [min(n, 30) for n in live]
    assert ks_binned(small_ref, small_live) == pytest.approx(ks_by_definition(a, b), abs=1e-12)


@settings(max_examples=50)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.integers(1, 10),
)
def test_binned_ks_never_exceeds_the_exact_ks(a: list[float], b: list[float], bins: int) -> None:
    edges = np.unique(np.quantile(a, np.linspace(0, 1, bins + 1)))
    binned = ks_binned(bin_counts(edges, a), bin_counts(edges, b))
    assert binned <= ks_by_definition(a, b) + 1e-12


def test_known_values() -> None:
    assert psi([1, 1], [1, 1]) == 0.0
    assert js_distance([5, 0], [0, 5]) == 1.0
    assert js_distance([3, 3], [6, 6]) == 0.0
    assert ks_binned([1, 0, 0], [0, 0, 1]) == 1.0
    # PSI conventions: a shift of a tenth of the mass between two of ten bins is "stable".
    assert psi([10] * 10, [11, 9] + [10] * 8) < 0.1


@pytest.mark.parametrize(
    ("reference", "live", "problem"),
    [
        ([1, 2], [1, 2, 3], "same bins"),
        ([0, 0], [1, 2], "empty histogram"),
        ([1, -1], [1, 2], "non-negative"),
    ],
)
def test_bad_histograms_are_refused_with_the_reason(
    reference: list[int], live: list[int], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        psi(reference, live)
