"""The percentile sketch's rules (featurestore/percentiles.py), without a server: keys as
DDSketch's `LogarithmicMapping` computes them, ordered as the values are; any split of the
values into tiles merges into the same quantile, which fits the brute-force order statistic
within α; the offline many-rows quantile answers the same; and definitions are checked."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.percentiles import (
    OFFSET,
    bucket_keys,
    bucket_value,
    quantile,
    quantile_of_keys,
    quantiles_of_rows,
)
from tests.reference import order_statistic, percentile_matches

# Below 1e300: DDSketch maps values up to 1.8e308/γ only (beyond, they count as that bound).
FINITE = st.floats(-1e300, 1e300, allow_subnormal=False)
ALPHAS = st.sampled_from([0.0001, 0.005, 0.01, 0.05, 0.5])
QS = st.floats(0.0, 1.0)


def test_keys_are_ddsketch_logarithmic_mapping_keys() -> None:
    ddsketch = pytest.importorskip("ddsketch.mapping")
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(0, 20, 20_000), [1e-300, 1.0, 2.0, 1e300]])
    for alpha in (0.001, 0.01, 0.05):
        mapping = ddsketch.LogarithmicMapping(alpha)
        ours = bucket_keys(values, alpha) - OFFSET
        theirs = np.array([mapping.key(x) for x in values.tolist()])
        # np.log2 and math.log(x, 2) may round apart in the last bit: only a value within a
        # hair of a bucket edge may land in the neighbouring bucket.
        logs = np.log2(values) * mapping._multiplier  # noqa: SLF001 - its constant
        edge = np.abs(logs - np.round(logs)) < 1e-9
        assert np.array_equal(ours[~edge], theirs[~edge])
        assert np.all(np.abs(ours - theirs) <= 1)
        represented = bucket_value(ours + OFFSET, alpha)
        wanted = np.array([mapping.value(int(k)) for k in ours])
        np.testing.assert_allclose(represented, wanted, rtol=1e-12)


@given(xs=st.lists(FINITE, min_size=2, max_size=50), alpha=ALPHAS)
def test_keys_sort_as_values(xs: list[float], alpha: float) -> None:
    values = np.array(sorted(xs))
    keys = bucket_keys(values, alpha)
    assert np.all(np.diff(keys) >= 0)
    gamma = (1 + alpha) / (1 - alpha)
    tiny = np.abs(values) < sys.float_info.min * gamma  # below DDSketch's smallest: zero
    assert np.all(keys[tiny] == 0)
    assert np.array_equal(np.sign(keys[~tiny]), np.sign(values[~tiny]).astype(np.int64))


@settings(max_examples=300)
@given(
    xs=st.lists(FINITE, min_size=0, max_size=60),
    tiles=st.lists(st.integers(0, 5), min_size=60, max_size=60),
    q=QS,
    alpha=ALPHAS,
)
def test_merged_tiles_give_the_quantile_of_the_whole(
    xs: list[float], tiles: list[int], q: float, alpha: float
) -> None:
    """Counts per tile (any split), summed as Redis sums them, give one answer: the bucket of
    the exact order statistic, within α of it; the offline functions answer the same."""
    values = np.array(xs, dtype=np.float64)
    keys = bucket_keys(values, alpha)
    merged: dict[int, int] = {}
    for tile in sorted(set(tiles[: len(xs)])):
        mine = keys[np.array(tiles[: len(xs)]) == tile]
        for key, count in zip(*np.unique(mine, return_counts=True), strict=True):
            merged[int(key)] = merged.get(int(key), 0) + int(count)
    online = quantile(
        np.array(list(merged), dtype=np.int64),
        np.array(list(merged.values()), dtype=np.int64),
        q,
        alpha,
    )
    offline = quantile_of_keys(keys, q, alpha)
    rows = quantiles_of_rows(np.zeros(len(keys), dtype=np.int64), keys, 1, q, alpha)[0]
    exact = order_statistic([{"x": x} for x in xs], "x", q)
    if exact is None:
        assert math.isnan(online) and math.isnan(offline) and math.isnan(rows)
        return
    assert online == offline == rows
    assert percentile_matches(online, exact, alpha)
    assert online == bucket_value(bucket_keys(np.array([exact]), alpha), alpha)[0]


def test_values_at_the_ends_of_float64_stay_finite() -> None:
    values = np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324, 0.0])
    keys = bucket_keys(values, 0.01)
    assert np.isfinite(bucket_value(keys, 0.01)).all()
    assert keys[2] == keys[3] == 0  # below DDSketch's smallest: zero


def test_many_rows_at_once_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 40, 2_000)
    keys = bucket_keys(rng.normal(0, 100, 2_000), 0.02)
    got = quantiles_of_rows(rows, keys, 45, 0.9, 0.02)
    for row in range(45):
        want = quantile_of_keys(keys[rows == row], 0.9, 0.02)
        assert (math.isnan(got[row]) and math.isnan(want)) or got[row] == want


SOURCE = KafkaSource(
    name="s",
    topic="t",
    timestamp_field="ts",
    schema={"user": "string", "amount": "float64", "n": "int64", "ok": "bool"},
)


def view_of(*aggregations: Aggregation) -> FeatureView:
    return FeatureView(
        name="v", entities=[Entity(name="user")], source=SOURCE, aggregations=list(aggregations)
    )


def test_feature_names() -> None:
    view = view_of(
        Aggregation(
            column="amount",
            function="approx_percentile",
            windows=["10m", "1h"],
            percentiles=[0.5, 0.9, 0.999],
        ),
        Aggregation(column="n", function="approx_percentile", windows=["1h"], percentiles=[1]),
    )
    assert view.feature_names() == [
        "amount_p50_10m",
        "amount_p90_10m",
        "amount_p99_9_10m",
        "amount_p50_1h",
        "amount_p90_1h",
        "amount_p99_9_1h",
        "n_p100_1h",
    ]


@pytest.mark.parametrize(
    ("aggregation", "message"),
    [
        (dict(column="amount"), "needs percentiles, fractions like percentiles=[0.5"),
        (dict(column="amount", percentiles=[90]), "are not fractions in [0, 1] (p90 is 0.9)"),
        (dict(column="amount", percentiles=[0.5, 0.5]), "repeat"),
        (
            dict(column="amount", percentiles=[0.5], relative_accuracy=0.9),
            "relative_accuracy 0.9 is outside",
        ),
        (dict(percentiles=[0.5]), "needs a column"),
    ],
)
def test_bad_aggregations_say_the_fix(aggregation: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match="approx_percentile") as error:
        Aggregation(function="approx_percentile", windows=["1h"], **aggregation)  # type: ignore[arg-type]
    assert message in str(error.value)


def test_percentiles_belong_to_approx_percentile() -> None:
    with pytest.raises(ValidationError, match="belong to approx_percentile; remove them"):
        Aggregation(function="mean", column="amount", windows=["1h"], percentiles=[0.5])


@pytest.mark.parametrize("column", ["user", "ok"])
def test_percentile_of_a_non_number_column_names_the_feature(column: str) -> None:
    with pytest.raises(ValidationError) as error:
        view_of(
            Aggregation(
                column=column, function="approx_percentile", windows=["1h"], percentiles=[0.9]
            )
        )
    text = str(error.value)
    assert f"{column}_p90_1h" in text and "needs an int64 or float64 column" in text


def test_fingerprint_unchanged_for_views_without_percentiles() -> None:
    """Views registered before percentiles existed keep their version: the new fields are left
    out of the fingerprint when unset (the value is what main computed before them)."""
    view = view_of(Aggregation(column="amount", function="sum", windows=["1h"]))
    assert view.fingerprint() == "e69f20cb89193ae5"
