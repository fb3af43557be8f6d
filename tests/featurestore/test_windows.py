"""The window formula (`featurestore.windows.window_range`) against each kind's definition in
words (docs/semantics.md), written here from first principles without tiles arithmetic; and what
definitions accept and refuse."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from featurestore.definitions import Aggregation, Entity, FeatureView, KafkaSource
from featurestore.windows import Window, parse_window, tile_window, window_range

SOURCE = KafkaSource(
    name="txns", topic="t", timestamp_field="ts", schema={"user_id": "string", "amount": "float64"}
)


def holds(window: str, tile_us: int, t: int, e: int) -> bool:
    return window_range(window, tile_us, t).contains(e, tile_us)


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, int, int, int, int, int]:
    tile = draw(st.sampled_from([1, 2, 5]))  # seconds
    step = tile * draw(st.integers(1, 4))
    length = step * draw(st.integers(1, 4))
    offset = tile * draw(st.integers(1, 5))
    t = draw(st.integers(0, 200)) * 1_000_000 + draw(st.sampled_from([0, 1, 999_999, 500_000]))
    e = t + draw(st.integers(-40, 5)) * 500_000 + draw(st.sampled_from([0, 1, -1]))
    return tile, step, length, offset, t, max(e, 0)


S = 1_000_000


@given(cases())
def test_sliding_offset_hopping_and_lifetime_hold_what_their_definitions_say(
    case: tuple[int, int, int, int, int, int],
) -> None:
    tile, step, length, offset, t, e = case
    T, L, K, P = tile * S, length * S, offset * S, step * S
    own_tile_start = t - t % T
    # sliding: from the start of the tile L - T before t's tile, up to t itself
    assert holds(f"{length}s", T, t, e) == (own_tile_start - (L - T) <= e <= t)
    # offset: the same window, ending (in whole tiles) K before t's tile ends
    end = own_tile_start + T - K  # exclusive
    assert holds(f"{length}s_offset_{offset}s", T, t, e) == (end - L <= e < end)
    # hopping: the newest window [j·P, j·P + L) that is complete at t (ends at or before t)
    complete_end = max(j * P + L for j in range(-L // P - 1, t // P + 1) if j * P + L <= t)
    assert holds(f"{length}s_every_{step}s", T, t, e) == (complete_end - L <= e < complete_end)
    shifted = complete_end - K
    assert holds(f"{length}s_every_{step}s_offset_{offset}s", T, t, e) == (
        shifted - L <= e < shifted
    )
    # tumbling: hopping with step == length
    tumbling_end = t - t % L
    assert holds(f"{length}s_tumbling", T, t, e) == (tumbling_end - L <= e < tumbling_end)
    # lifetime: everything up to t
    assert holds("lifetime", T, t, e) == (e <= t)


def test_window_objects_are_their_strings_and_keep_fingerprints() -> None:
    assert [str(w) for w in (Window("24h", offset="1h"), Window("1h", every="10m"))] == [
        "24h_offset_1h",
        "1h_every_10m",
    ]
    assert str(Window("1d", every="1d")) == str(Window.tumbling("1d")) == "1d_tumbling"
    assert parse_window("lifetime") == Window.lifetime()
    by_object = Aggregation(
        function="count", windows=[Window("24h", offset="1h"), Window.lifetime()]
    )
    by_text = Aggregation(function="count", windows=["24h_offset_1h", "lifetime"])
    assert by_object == by_text
    assert by_object.feature_names() == ["count_24h_offset_1h", "count_lifetime"]


def test_a_view_of_sliding_windows_keeps_its_fingerprint() -> None:
    """Computed with the code before window kinds existed: registered views keep their
    version."""
    view = FeatureView(
        name="user_txn",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=KafkaSource(
            name="txns",
            topic="transactions",
            timestamp_field="ts",
            schema={
                "user_id": "string",
                "merchant": "string",
                "amount": "float64",
                "qty": "int64",
                "is_refund": "bool",
                "ts": "timestamp",
            },
        ),
        tile="1m",
        aggregations=[
            Aggregation(column="amount", function="sum", windows=["10m", "1h"]),
            Aggregation(function="count", windows=["10m"]),
            Aggregation(column="merchant", function="approx_count_distinct", windows=["24h"]),
        ],
    )
    assert view.fingerprint() == "e39a5de2385dfc10"
    assert view.max_window_us == 86_400_000_000


def test_how_far_back_tiles_are_kept() -> None:
    view = FeatureView(
        name="v",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=SOURCE,
        tile="1m",
        aggregations=[
            Aggregation(function="count", windows=["10m", "lifetime"]),
            # may start 60 + 30 - 1 + 1 + 5 tiles back from the read's tile
            Aggregation(function="count", windows=["1h_every_30m_offset_5m"]),
        ],
    )
    assert tile_window("1h_every_30m_offset_5m", 60_000_000).reach_tiles() == 95
    assert view.max_window_us == 95 * 60_000_000
    assert view.has_lifetime


def view_with(windows: list[Any], tile: str = "1m") -> FeatureView:
    return FeatureView(
        name="v",
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=SOURCE,
        tile=tile,
        aggregations=[Aggregation(column="amount", function="sum", windows=windows)],
    )


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (
            ["1h_every_7m"],
            "feature amount_sum_1h_every_7m: window 1h_every_7m: the step 7m "
            "does not divide the length 1h; use a step that does",
        ),
        (["1h_offset_-1h"], "window '1h_offset_-1h': the offset is negative"),
        ([Window("1h", offset="-5m")], "the offset is negative; use a duration > 0"),
        (["lifetime_offset_1h"], "is not a window: write a duration"),
        (["1h", "60m"], "windows repeat: ['1h', '60m']"),
        (["1h_offset_0m"], "'0m' is empty"),
        (["1d_tumblin"], "'1d_tumblin' is not a window"),
    ],
)
def test_bad_windows_name_the_feature_or_window_and_the_fix(
    windows: list[Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        view_with(windows)


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (
            ["10m_offset_30s"],
            "the offset of 10m_offset_30s is not a multiple of the tile 1m "
            "(feature amount_sum_10m_offset_30s); use whole tiles",
        ),
        (["12m_every_90s"], "the step of 12m_every_90s is not a multiple of the tile 1m"),
        (["90s_tumbling"], "window 90s_tumbling is not a multiple of the tile 1m"),
    ],
)
def test_windows_must_be_whole_tiles(windows: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        view_with(windows)


def test_the_same_feature_name_twice_is_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match=re.escape("give one of the aggregations a")):
        FeatureView(
            name="v",
            entities=[Entity(name="user", join_keys=["user_id"])],
            source=SOURCE,
            aggregations=[
                Aggregation(column="amount", function="sum", windows=["1h_tumbling"]),
                Aggregation(column="amount", function="sum", windows=["lifetime", "1h_tumbling"]),
            ],
        )
