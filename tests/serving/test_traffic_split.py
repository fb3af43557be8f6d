"""The sticky traffic split, checked against a brute-force reference on random inputs."""

from __future__ import annotations

import hashlib
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.keys import entity_keys
from serving.traffic_split import Split, unit_interval

aliases = st.dictionaries(
    st.sampled_from(["production", "canary", "blue", "green", "shadow"]),
    st.integers(1, 5),
    min_size=1,
)


def reference_alias(
    model: str, key: str, aliases: dict[str, int], traffic: dict[str, float]
) -> str:
    """Walk the slices by hand: other aliases by name, then production, shadow never."""
    point = (
        int.from_bytes(hashlib.blake2b(f"{model}\x1f{key}".encode(), digest_size=8).digest(), "big")
        >> 11
    )
    point_f = point / 2**53
    weighted = {a: w for a, w in traffic.items() if w > 0 and a != "shadow" and a in aliases}
    order = sorted(a for a in weighted if a != "production")
    order += ["production"] if "production" in weighted else []
    total = sum(weighted.values())
    edge = 0.0
    for alias in order:
        edge += weighted[alias] / total
        if point_f < edge:
            return alias
    return order[-1]


@settings(max_examples=200, deadline=None)
@given(
    aliases=aliases,
    weights=st.lists(st.floats(0, 10, allow_nan=False), min_size=5, max_size=5),
    keys=st.lists(st.text(max_size=12), min_size=1, max_size=30),
)
def test_assignment_matches_the_reference(
    aliases: dict[str, int], weights: list[float], keys: list[str]
) -> None:
    traffic = dict(zip(["production", "canary", "blue", "green", "shadow"], weights, strict=True))
    split = Split.from_rollout("fraud", aliases, traffic)
    takers = [a for a, w in traffic.items() if w > 0 and a in aliases and a != "shadow"]
    if not takers:
        assert split is None
        return
    assert split is not None
    assert "shadow" not in split.aliases
    chosen = [split.aliases[i] for i in split.assign(keys)]
    if len(split.aliases) == 1:
        assert chosen == [split.aliases[0]] * len(keys)
    else:
        assert chosen == [reference_alias("fraud", k, aliases, traffic) for k in keys]
    assert [split.versions[split.aliases.index(a)] for a in chosen] == [aliases[a] for a in chosen]


def test_points_are_stable_in_range_and_uniform() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    points = unit_interval("fraud", keys)
    assert points.min() >= 0.0 and points.max() < 1.0
    # The same keys give the same points (no per-process salt, unlike hash()).
    assert np.array_equal(points, unit_interval("fraud", keys))
    # Another model splits independently.
    assert not np.array_equal(points, unit_interval("churn", keys))
    counts, _ = np.histogram(points, bins=10, range=(0, 1))
    expected = len(keys) / 10
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts)


def test_a_growing_canary_keeps_its_entities() -> None:
    keys = [f"user-{i}" for i in range(5_000)]
    aliases_ = {"production": 1, "canary": 2}
    small = Split.from_rollout("fraud", aliases_, {"production": 0.9, "canary": 0.1})
    large = Split.from_rollout("fraud", aliases_, {"production": 0.8, "canary": 0.2})
    assert small is not None and large is not None
    on_small = {k for k, i in zip(keys, small.assign(keys), strict=True) if i == 0}
    on_large = {k for k, i in zip(keys, large.assign(keys), strict=True) if i == 0}
    assert on_small < on_large


def test_entity_keys_join_composite_keys_like_the_online_store() -> None:
    entities = {"user_id": ["a", "b"], "card": [1, 2]}
    assert entity_keys(entities, ("user_id", "card")) == ["a|1", "b|2"]
    assert entity_keys(entities, ("card",)) == ["1", "2"]
