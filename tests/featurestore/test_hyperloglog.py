"""featurestore/hyperloglog.py against the real thing: whatever members are added to Redis
HyperLogLogs, PFCOUNT of the sketches (one or a union of several) equals `estimate` of the
members' codes, from a few members (the sparse encoding) to a hundred thousand (dense, where the
estimate depends on every bit of the hash and of the estimator's arithmetic)."""

from __future__ import annotations

import random

import numpy as np
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.definitions import ValueType
from featurestore.hyperloglog import code, estimate, estimates, member

_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _members(rng: random.Random, n: int) -> list[str]:
    """n texts of random lengths (every tail length of the hash's 8-byte blocks) and alphabets."""
    alphabet = "abcdefghij0123456789-_:|{}é漢😀"
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(n)]


def _pfcount(client: redis_lib.Redis, keys: list[str], sketches: list[list[str]]) -> int:
    for key, members in zip(keys, sketches, strict=True):
        for first in range(0, len(members), 1000):
            client.pfadd(key, *members[first : first + 1000])
    return int(client.pfcount(*keys))


@_SETTINGS
@given(
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.sampled_from([0, 1, 5, 300, 3_000, 40_000]), min_size=1, max_size=3),
)
def test_estimate_is_pfcount_of_the_union(
    redis_client: redis_lib.Redis, key_prefix: str, seed: int, sizes: list[int]
) -> None:
    rng = random.Random(seed)
    sketches = [_members(rng, n) for n in sizes]
    keys = [f"{key_prefix}{seed}:{i}" for i in range(len(sizes))]
    try:
        expected = _pfcount(redis_client, keys, sketches)
    finally:
        redis_client.delete(*keys)
    assert estimate(code(m) for sketch in sketches for m in sketch) == expected


@_SETTINGS
@given(st.lists(st.lists(st.text(max_size=12), max_size=60), min_size=1, max_size=8))
def test_estimates_of_many_rows_are_each_rows_estimate(rows: list[list[str]]) -> None:
    row_ids = np.array([i for i, row in enumerate(rows) for _ in row], dtype=np.int64)
    codes = np.array([code(m) for row in rows for m in row], dtype=np.int64)
    assert estimates(row_ids, codes, len(rows)).tolist() == [
        estimate(code(m) for m in row) for row in rows
    ]


def test_one_value_is_one_member_whatever_json_carried_it() -> None:
    assert member(ValueType.FLOAT64, 5) == member(ValueType.FLOAT64, 5.0)
    assert member(ValueType.FLOAT64, 1e300) == repr(1e300)
    assert member(ValueType.INT64, -7) == "-7"
    assert (member(ValueType.BOOL, False), member(ValueType.STRING, "x")) == ("false", "x")
