"""Feature definitions: what a valid view looks like, and the message an invalid one gets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from featurestore.definitions import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    KafkaSource,
    duration_us,
)

SCHEMA = {
    "user_id": "string",
    "merchant": "string",
    "amount": "float64",
    "qty": "int64",
    "is_refund": "bool",
    "ts": "timestamp",
}
SOURCE = KafkaSource(name="txns", topic="transactions", timestamp_field="ts", schema=SCHEMA)
USER = Entity(name="user", join_keys=["user_id"])


def view(**changes: Any) -> FeatureView:
    fields: dict[str, Any] = {
        "name": "user_txn",
        "entities": [USER],
        "source": SOURCE,
        "tile": "1m",
        "aggregations": [
            Aggregation(column="amount", function="sum", windows=["10m", "1h"]),
            Aggregation(function="count", windows=["10m"]),
        ],
    }
    fields.update(changes)
    return FeatureView(**fields)


def rejected(match: str, build: Any) -> str:
    """The validation message of an invalid definition; `match` is a literal substring."""
    with pytest.raises(ValidationError, match=re.escape(match)) as caught:
        build()
    return str(caught.value)


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("250ms", 250_000),
        ("30s", 30_000_000),
        ("10m", 600_000_000),
        ("1h", 3_600_000_000),
        ("7d", 604_800_000_000),
        ("2w", 1_209_600_000_000),
    ],
)
def test_duration_us(text: str, micros: int) -> None:
    assert duration_us(text) == micros


@pytest.mark.parametrize("text", ["10", "10 m", "10min", "1y", "-5m", "1.5h", "", "m", "1H"])
def test_bad_duration_string_says_what_a_duration_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{text!r} is not a duration like '30s'")):
        duration_us(text)


@pytest.mark.parametrize("field", ["tile", "allowed_lateness", "ttl"])
def test_bad_duration_in_a_view_is_rejected(field: str) -> None:
    rejected("'ten minutes' is not a duration like", lambda: view(**{field: "ten minutes"}))


def test_bad_window_duration_is_rejected() -> None:
    rejected(
        "'10 minutes' is not a duration like",
        lambda: Aggregation(column="amount", function="sum", windows=["10 minutes"]),
    )


# -- invalid views -----------------------------------------------------------------------------


def test_unknown_column_names_the_column_and_the_schema() -> None:
    message = rejected(
        "unknown column 'amout' (source 'txns' has ['amount', 'is_refund', 'merchant', 'qty', "
        "'ts', 'user_id'])",
        lambda: view(aggregations=[Aggregation(column="amout", function="sum", windows=["1h"])]),
    )
    assert "feature view 'user_txn'" in message


def test_window_not_a_multiple_of_the_tile() -> None:
    rejected(
        "window 90s is not a multiple of the tile 1m",
        lambda: view(
            aggregations=[Aggregation(column="amount", function="sum", windows=["10m", "90s"])]
        ),
    )
    rejected("window 10m is not a multiple of the tile 7m", lambda: view(tile="7m"))
    # A window equal to the tile, or spelled in another unit, is fine.
    assert view(tile="10m", aggregations=[Aggregation(function="count", windows=["600s"])])


@pytest.mark.parametrize(
    "aggregations",
    [
        [
            Aggregation(column="amount", function="sum", windows=["10m"]),
            Aggregation(column="amount", function="sum", windows=["10m", "1h"]),
        ],
        [
            Aggregation(column="amount", function="sum", windows=["10m"]),
            Aggregation(column="qty", function="sum", windows=["10m"], name="amount_sum"),
        ],
    ],
)
def test_duplicate_feature_names(aggregations: list[Aggregation]) -> None:
    rejected("duplicate feature names ['amount_sum_10m']", lambda: view(aggregations=aggregations))


@pytest.mark.parametrize("function", ["sum", "mean", "min", "max", "variance", "stddev"])
@pytest.mark.parametrize(("column", "kind"), [("merchant", "string"), ("ts", "timestamp")])
def test_numeric_function_of_a_non_numeric_column(function: str, column: str, kind: str) -> None:
    rejected(
        f"{function} needs a numeric column; {column!r} is {kind}",
        lambda: view(aggregations=[Aggregation(column=column, function=function, windows=["1h"])]),
    )


@pytest.mark.parametrize("column", ["amount", "qty", "is_refund"])
def test_numeric_columns_are_accepted(column: str) -> None:
    assert view(aggregations=[Aggregation(column=column, function="mean", windows=["1h"])])


def test_join_key_not_in_schema() -> None:
    account = Entity(name="account", join_keys=["account_id"])
    rejected(
        "join key 'account_id' is not in source 'txns''s schema",
        lambda: view(entities=[USER, account]),
    )


def test_every_problem_is_reported_at_once() -> None:
    message = rejected(
        "feature view 'user_txn': ",
        lambda: view(
            entities=[Entity(name="account_id")],
            aggregations=[
                Aggregation(column="amout", function="sum", windows=["10m"]),
                Aggregation(column="merchant", function="max", windows=["90s"]),
            ],
        ),
    )
    for part in (
        "join key 'account_id'",
        "unknown column 'amout'",
        "max needs a numeric column",
        "window 90s is not a multiple",
    ):
        assert part in message


def test_a_view_needs_entities_and_aggregations() -> None:
    rejected("needs at least one entity", lambda: view(entities=[]))
    rejected("needs at least one aggregation", lambda: view(aggregations=[]))


def test_invalid_aggregations() -> None:
    rejected(
        "an aggregation needs at least one window",
        lambda: Aggregation(function="count", windows=[]),
    )
    rejected(
        "windows repeat: ['1h', '1h']", lambda: Aggregation(function="count", windows=["1h", "1h"])
    )
    rejected("sum needs a column", lambda: Aggregation(function="sum", windows=["1h"]))
    rejected(
        "Input should be 'count', 'sum'", lambda: Aggregation(function="median", windows=["1h"])
    )
    rejected(
        "'amount sum' is not a valid name",
        lambda: Aggregation(function="sum", column="amount", windows=["1h"], name="amount sum"),
    )


def test_an_explicit_name_none_means_the_default_prefix() -> None:
    assert Aggregation(function="count", windows=["1h"], name=None).prefix == "count"


def test_invalid_names_and_sources() -> None:
    rejected("'1user' is not a valid name", lambda: Entity(name="1user"))
    rejected("entity 'user' repeats a join key", lambda: Entity(name="user", join_keys=["a", "a"]))
    rejected(
        "timestamp field 'amount' of source 's' is declared float64",
        lambda: KafkaSource(name="s", topic="t", timestamp_field="amount", schema=SCHEMA),
    )
    rejected("Extra inputs are not permitted", lambda: view(windows=["1h"]))


# -- valid views -----------------------------------------------------------------------------


def test_feature_names() -> None:
    v = view(
        aggregations=[
            Aggregation(column="amount", function="sum", windows=["10m", "1h"]),
            Aggregation(function="count", windows=["10m"]),
            Aggregation(column="amount", function="count", windows=["1h"]),
            Aggregation(column="amount", function="stddev", windows=["1d"], name="spread"),
            Aggregation(column="qty", function="last", windows=["1h"]),
        ]
    )
    assert v.feature_names() == [
        "amount_sum_10m",
        "amount_sum_1h",
        "count_10m",
        "amount_count_1h",
        "spread_1d",
        "qty_last_1h",
    ]
    service = FeatureService(name="fraud", features=[v, "other:count_1h"])
    assert service.refs() == [f"user_txn:{name}" for name in v.feature_names()] + ["other:count_1h"]


def test_defaults_and_derived_values() -> None:
    v = view(ttl="2h")
    assert (v.tile_us, v.lateness_us, v.ttl_us) == (60_000_000, 300_000_000, 7_200_000_000)
    assert v.max_window_us == 3_600_000_000
    assert v.join_keys == ["user_id"]
    assert Entity(name="user").join_keys == ["user"]
    assert view().ttl_us is None
    source = KafkaSource(name="s", topic="t", timestamp_field="event_time", schema={"a": "int64"})
    assert source.schema_["event_time"] == "timestamp"


# -- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_stable() -> None:
    assert view().fingerprint() == view().fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", view().fingerprint())


@pytest.mark.parametrize(
    "changes",
    [
        {"aggregations": [Aggregation(column="amount", function="mean", windows=["10m", "1h"])]},
        {"aggregations": [Aggregation(column="amount", function="sum", windows=["10m", "2h"])]},
        {"aggregations": [Aggregation(column="qty", function="sum", windows=["10m", "1h"])]},
        {"aggregations": [Aggregation(column="amount", function="sum", windows=["10m"])]},
        {"tile": "5m"},
        {"allowed_lateness": "1m"},
        {"source": SOURCE.model_copy(update={"timestamp_field": "event_time"})},
        {"entities": [Entity(name="user", join_keys=["user_id", "merchant"])]},
    ],
)
def test_fingerprint_changes_with_what_changes_values(changes: dict[str, Any]) -> None:
    assert view(**changes).fingerprint() != view().fingerprint()


def test_fingerprint_ignores_description_and_tags() -> None:
    base = view().fingerprint()
    assert view(description="Spend per user.").fingerprint() == base
    assert view(tags={"team": "risk"}).fingerprint() == base


@pytest.mark.parametrize(
    "changes",
    [
        {"entities": [Entity(name="user", join_keys=["user_id"], description="A customer.")]},
        {
            "source": KafkaSource(
                **{**SOURCE.model_dump(by_alias=True), "description": "Card txns."}
            )
        },
    ],
)
def test_fingerprint_ignores_nested_descriptions(changes: dict[str, Any]) -> None:
    assert view(**changes).fingerprint() == view().fingerprint()


# -- known discrepancies, pinned until fixed --------------------------------------------------


def test_zero_tile_is_rejected_with_a_message() -> None:
    rejected("tile", lambda: view(tile="0s"))


def test_zero_window_is_rejected() -> None:
    rejected("0m", lambda: view(aggregations=[Aggregation(function="count", windows=["0m"])]))
