"""The reference profile against numpy on random data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from featurestore.models.profile import bin_counts, column_profile, reference_profile

values = hnp.arrays(
    np.float64,
    st.integers(0, 60),
    elements=st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False),
        st.sampled_from([0.0, 1.0, 2.5]),  # repeats make duplicate quantile edges
        st.just(np.nan),
    ),
)


@given(values, st.integers(1, 12))
def test_column_profile_matches_numpy(array: np.ndarray, bins: int) -> None:
    profile = column_profile(array, bins)

    present = array[~np.isnan(array)]
    edges = np.array(profile["edges"])
    if present.size:
        expected = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)))
        np.testing.assert_array_equal(edges, expected)
        # Inside the edges the counts are numpy's histogram (left-closed, last bin closed).
        if edges.size >= 2:
            np.testing.assert_array_equal(profile["counts"], np.histogram(present, edges)[0])
        else:
            assert profile["counts"] == [present.size]
        assert profile["mean"] == pytest.approx(float(np.mean(present)))
        assert profile["std"] == pytest.approx(float(np.std(present)))
        assert (profile["min"], profile["max"]) == (present.min(), present.max())
    else:
        assert profile["edges"] == [] and profile["counts"] == []
        assert profile["mean"] is None and profile["max"] is None
    assert sum(profile["counts"]) == present.size
    assert profile["count"] == array.size
    assert profile["missing_rate"] == (
        pytest.approx((array.size - present.size) / array.size) if array.size else 0.0
    )
    assert len(edges) <= bins + 1 and np.all(np.diff(edges) > 0)


@given(values, values.filter(lambda a: a.size > 0))
def test_bin_counts_puts_outside_values_in_the_end_bins(
    reference: np.ndarray, live: np.ndarray
) -> None:
    edges = column_profile(reference)["edges"]
    counts = bin_counts(edges, live)

    present = live[~np.isnan(live)]
    if not edges:
        assert counts.tolist() == []
        return
    assert counts.sum() == present.size
    assert counts.size == max(len(edges) - 1, 1)
    if len(edges) >= 2:
        clipped = np.clip(present, edges[0], edges[-1])
        np.testing.assert_array_equal(counts, np.histogram(clipped, edges)[0])


def test_reference_profile_is_json_and_binned_the_same_way() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=1000)
    x[::10] = np.nan
    scores = rng.random(500)

    profile = json.loads(json.dumps(reference_profile({"x": x}, scores)))

    assert profile["bins"] == 10 and profile["version"] == 1
    assert profile["features"]["x"]["missing_rate"] == pytest.approx(0.1)
    # Deciles: each bin holds a tenth of the values.
    assert profile["features"]["x"]["counts"] == [90] * 10
    assert profile["score"]["counts"] == [50] * 10
    assert bin_counts(profile["score"]["edges"], scores).tolist() == [50] * 10


def test_bad_edges_are_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        bin_counts([1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="at least 1"):
        column_profile([1.0], bins=0)
