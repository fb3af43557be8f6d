"""Feature definitions, written in Python in the user's feature repo (Feast-like).

>>> user = Entity(name="user", join_keys=["user_id"])
>>> txns = KafkaSource(name="txns", topic="transactions", timestamp_field="ts",
...                    schema={"user_id": "string", "amount": "float64"})
>>> view = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
...                    aggregations=[Aggregation(column="amount", function="sum",
...                                              windows=["10m", "1h"])])
>>> view.feature_names()
['amount_sum_10m', 'amount_sum_1h']
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from featurestore.durations import duration_us
from featurestore.windows import TileWindow, Window, parse_window, tile_window

__all__ = [
    "DEFAULT_MAX_FUTURE",
    "Aggregation",
    "Entity",
    "FeatureService",
    "FeatureView",
    "Function",
    "KafkaSource",
    "ValueType",
    "Window",
    "duration_us",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ValueType(StrEnum):
    STRING = "string"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOL = "bool"
    TIMESTAMP = "timestamp"


class Function(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    STDDEV = "stddev"  # sample standard deviation (n - 1); null below 2 events
    VARIANCE = "variance"  # sample variance (n - 1); null below 2 events
    LAST = "last"  # value of the newest event by event time (ties: the later offset)
    APPROX_COUNT_DISTINCT = "approx_count_distinct"  # HyperLogLog, ~0.81% standard error


_NUMERIC_FUNCTIONS = {
    Function.LAST,  # tiles hold float64 slots; `last` of a string column is not supported yet
    Function.SUM,
    Function.MEAN,
    Function.MIN,
    Function.MAX,
    Function.STDDEV,
    Function.VARIANCE,
}


class _Definition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("name", check_fields=False)
    @classmethod
    def _identifier(cls, name: str | None) -> str | None:
        if name is not None and not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid name (letters, digits, _; not first digit)")
        return name


class Entity(_Definition):
    """What features describe: a user, a merchant, a (user, merchant) pair."""

    name: str
    join_keys: list[str] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _default_join_key(self) -> Entity:
        if not self.join_keys:
            object.__setattr__(self, "join_keys", [self.name])
        if len(set(self.join_keys)) != len(self.join_keys):
            raise ValueError(f"entity {self.name!r} repeats a join key: {self.join_keys}")
        return self


DEFAULT_MAX_FUTURE = "5m"


class KafkaSource(_Definition):
    """A Kafka topic of events. `schema` maps field names to types; JSON for now.

    `max_future` bounds event time: an event dated further ahead of the wall clock (read once
    per batch) is dead-lettered as `future` instead of raising its partition's watermark, which
    would make every current event after it late. Unset means `DEFAULT_MAX_FUTURE`; it is left
    out of stored definitions and fingerprints, so views registered before it existed keep
    their version.

    >>> KafkaSource(name="s", topic="t", timestamp_field="ts", schema={}).max_future_us
    300000000
    """

    name: str
    topic: str
    timestamp_field: str
    schema_: dict[str, ValueType] = Field(alias="schema")
    format: Literal["json"] = "json"  # avro / protobuf fit here later
    description: str = ""
    max_future: str | None = None  # a duration; None: DEFAULT_MAX_FUTURE

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("max_future")
    @classmethod
    def _duration(cls, text: str | None) -> str | None:
        if text is not None:
            duration_us(text)
        return text

    @property
    def max_future_us(self) -> int:
        return duration_us(self.max_future or DEFAULT_MAX_FUTURE)

    @model_validator(mode="after")
    def _timestamp_in_schema(self) -> KafkaSource:
        declared = self.schema_.get(self.timestamp_field)
        if declared is None:
            object.__setattr__(
                self, "schema_", {**self.schema_, self.timestamp_field: ValueType.TIMESTAMP}
            )
        elif declared not in (ValueType.TIMESTAMP, ValueType.INT64, ValueType.STRING):
            raise ValueError(
                f"timestamp field {self.timestamp_field!r} of source {self.name!r} is declared "
                f"{declared}; use timestamp (ISO 8601 string or epoch milliseconds)"
            )
        return self


class Aggregation(_Definition):
    """One function of one column over one or more windows.

    `count` counts events and needs no column. Feature names are `{column}_{function}_{window}`
    (`count_{window}` for a column-less count) unless `name` gives the prefix. A window is a
    duration (sliding) or another kind (featurestore/windows.py): `"24h_offset_1h"`,
    `"1h_every_10m"`, `"1d_tumbling"`, `"lifetime"`, or the same as a `Window(...)`; it is
    stored as its string.
    """

    function: Function
    windows: list[str]
    column: str | None = None
    name: str | None = None

    @field_validator("windows", mode="before")
    @classmethod
    def _window_strings(cls, windows: Any) -> Any:
        if isinstance(windows, list | tuple):
            return [str(w) if isinstance(w, Window) else w for w in windows]
        return windows

    @model_validator(mode="after")
    def _check(self) -> Aggregation:
        if not self.windows:
            raise ValueError("an aggregation needs at least one window")
        specs = []
        for window in self.windows:
            try:
                specs.append(parse_window(window))
            except ValueError as exc:
                if "_" not in window:
                    raise  # not a duration: the feature's name would be as wrong as the text
                raise ValueError(f"feature {self.prefix}_{window}: {exc}") from None
        if len({_window_key(w) for w in specs}) != len(specs):
            raise ValueError(
                f"{self._named()}: windows repeat: {self.windows}; list each window once"
            )
        if self.column is None and self.function is not Function.COUNT:
            raise ValueError(f"{self.function} needs a column")
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a valid feature name prefix")
        return self

    def _named(self) -> str:
        return f"aggregation {self.prefix}"

    @property
    def prefix(self) -> str:
        if self.name is not None:
            return self.name
        if self.column is None:
            return "count"
        return f"{self.column}_{self.function.value}"

    def feature_names(self) -> list[str]:
        return [f"{self.prefix}_{window}" for window in self.windows]


def _window_key(window: Window) -> tuple[int, int, int]:
    """A window's durations in µs, so '60m' and '1h' are one window (0: none)."""
    if window.is_lifetime:
        return (0, 0, 0)
    return (
        duration_us(window.length),
        0 if window.every is None else duration_us(window.every),
        0 if window.offset is None else duration_us(window.offset),
    )


class FeatureView(_Definition):
    """Windowed aggregations of a source, keyed by its entities.

    Every window is a whole number of tiles; see docs/semantics.md for the exact formula.
    """

    name: str
    entities: list[Entity]
    source: KafkaSource
    aggregations: list[Aggregation]
    tile: str = "1m"
    allowed_lateness: str = "5m"
    ttl: str | None = None  # a value whose newest event is older than this is reported stale
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> FeatureView:
        problems = list(self._problems())
        if problems:
            raise ValueError(f"feature view {self.name!r}: " + "; ".join(problems))
        return self

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if not self.entities:
            problems.append("needs at least one entity")
        if not self.aggregations:
            problems.append("needs at least one aggregation")
        for name in ("tile", "allowed_lateness", "ttl"):
            text = getattr(self, name)
            if text is not None:
                try:
                    duration_us(text)
                except ValueError as exc:
                    problems.append(f"{name}: {exc}")
        if problems:
            return problems  # windows cannot be checked against a broken tile
        tile = duration_us(self.tile)
        schema = self.source.schema_
        for key in self.join_keys:
            if key not in schema:
                problems.append(f"join key {key!r} is not in source {self.source.name!r}'s schema")
        for agg in self.aggregations:
            features = ", ".join(agg.feature_names())
            if agg.column is not None and agg.column not in schema:
                problems.append(
                    f"{features}: unknown column {agg.column!r} (source {self.source.name!r} has "
                    f"{sorted(schema)}); fix the column name or add it to the source's schema"
                )
            elif agg.function in _NUMERIC_FUNCTIONS and agg.column is not None:
                if schema[agg.column] not in (ValueType.INT64, ValueType.FLOAT64, ValueType.BOOL):
                    problems.append(
                        f"{features}: {agg.function} needs a numeric column; {agg.column!r} is "
                        f"{schema[agg.column]}; aggregate an int64, float64 or bool column (or "
                        f"count {agg.column!r}'s distinct values with approx_count_distinct)"
                    )
            for window, feature in zip(agg.windows, agg.feature_names(), strict=True):
                spec = parse_window(window)
                parts = [("length", spec.length), ("step", spec.every), ("offset", spec.offset)]
                for what, text in parts if not spec.is_lifetime else []:
                    if text is not None and duration_us(text) % tile:
                        shown = (
                            f"window {window}" if what == "length" else f"the {what} of {window}"
                        )
                        problems.append(
                            f"{shown} is not a multiple of the tile {self.tile} (feature "
                            f"{feature}); use whole tiles"
                        )
        names = self.feature_names()
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(
                f"duplicate feature names {duplicates}; give one of the aggregations a "
                "`name=` prefix or drop the repeated window"
            )
        return problems

    @property
    def join_keys(self) -> list[str]:
        return [key for entity in self.entities for key in entity.join_keys]

    @property
    def tile_us(self) -> int:
        return duration_us(self.tile)

    @property
    def lateness_us(self) -> int:
        return duration_us(self.allowed_lateness)

    @property
    def ttl_us(self) -> int | None:
        return None if self.ttl is None else duration_us(self.ttl)

    @property
    def max_window_us(self) -> int:
        """How far back from a read time any tile window reaches, in µs (a sliding window:
        its length; an offset or a step reaches further). Lifetime windows keep no tiles."""
        reach = [w.reach_tiles() for w in self.tile_windows() if not w.is_lifetime]
        return max(reach, default=1) * self.tile_us

    @property
    def has_lifetime(self) -> bool:
        """Whether a feature is over a lifetime window (a never-expiring per-entity state)."""
        return any(w.is_lifetime for w in self.tile_windows())

    def tile_windows(self) -> list[TileWindow]:
        """Every feature's window in this view's tiles, in feature order."""
        return [tile_window(w, self.tile_us) for agg in self.aggregations for w in agg.windows]

    def feature_names(self) -> list[str]:
        return [name for agg in self.aggregations for name in agg.feature_names()]

    def fingerprint(self) -> str:
        """A hash of everything that changes the stored state: a new one means a new version.

        Descriptions and tags (here or in the entities and source) and the ttl, which only
        changes the status reads report, keep the version and so its online state. So does the
        source's `max_future`: it decides against the wall clock which new events are turned
        away, and changes nothing already applied.
        """
        body = _without(self.model_dump(mode="json", by_alias=True), {"description", "tags"})
        body.pop("ttl", None)
        body["source"].pop("max_future", None)
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class FeatureService(_Definition):
    """The named list of features a model uses: refs like `user_txn:amount_sum_10m`, or a view."""

    name: str
    features: list[str | FeatureView]
    description: str = ""

    def refs(self) -> list[str]:
        out: list[str] = []
        for item in self.features:
            if isinstance(item, FeatureView):
                out.extend(f"{item.name}:{feature}" for feature in item.feature_names())
            else:
                out.append(item)
        return out


def _without(body: Any, keys: set[str]) -> Any:
    if isinstance(body, dict):
        return {k: _without(v, keys) for k, v in body.items() if k not in keys}
    if isinstance(body, list):
        return [_without(v, keys) for v in body]
    return body
