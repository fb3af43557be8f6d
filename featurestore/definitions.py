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
    FIRST = "first"  # value of the oldest event in the window by (time, partition, offset)
    LAST_N = "last_n"  # the values of the `n` newest events, newest first (a list); needs `n`
    TOP_K = "top_k"  # the `k` most frequent values of a string column (ties: the smaller value)
    APPROX_COUNT_DISTINCT = "approx_count_distinct"  # HyperLogLog, ~0.81% standard error
    # DDSketch buckets (featurestore/percentiles.py): within `relative_accuracy` of the exact
    # order statistic; needs `percentiles`
    APPROX_PERCENTILE = "approx_percentile"


_NUMERIC_FUNCTIONS = {
    Function.SUM,
    Function.MEAN,
    Function.MIN,
    Function.MAX,
    Function.STDDEV,
    Function.VARIANCE,
}
# Functions of numbers that are not slots of the tile state: their columns must be int64 or
# float64 (a percentile of booleans says nothing a mean does not).
_NUMBER_FUNCTIONS = {Function.APPROX_PERCENTILE}
# Functions that pick one event's value: numbers and bools (float64 tile slots, bools as 0/1)
# or strings (a side value per tile, see tiles.py); their feature has the column's type.
_PICK_FUNCTIONS = {Function.FIRST, Function.LAST, Function.LAST_N}
_PICK_TYPES = (ValueType.INT64, ValueType.FLOAT64, ValueType.BOOL, ValueType.STRING)


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

    `approx_percentile` takes `percentiles` (fractions, e.g. `[0.5, 0.9, 0.99]`) and optionally
    `relative_accuracy` (α, default 0.01); its features are `{column}_p{percent}_{window}`:

    >>> Aggregation(column="amount", function="approx_percentile", windows=["1h"],
    ...             percentiles=[0.5, 0.999]).feature_names()
    ['amount_p50_1h', 'amount_p99_9_1h']

    """

    function: Function
    windows: list[str]
    column: str | None = None
    name: str | None = None
    # approx_percentile only; left out of stored definitions and fingerprints when unset, so
    # the views registered before they existed keep their version.
    percentiles: list[float] | None = None
    relative_accuracy: float | None = None
    n: int | None = None  # last_n only; left out when unset, as the two above
    k: int | None = None  # top_k only; the same

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
        self._check_percentiles()
        if self.function is Function.LAST_N:
            if self.n is None or not 1 <= self.n <= 1000:
                raise ValueError(
                    f"last_n of {self.column!r} needs n, how many newest values to keep: "
                    f"n=5 (1 to 1000; got {self.n})"
                )
        elif self.n is not None:
            raise ValueError(f"{self.function} of {self.column!r}: n belongs to last_n; remove it")
        if self.function is Function.TOP_K:
            if self.k is None or not 1 <= self.k <= 1000:
                raise ValueError(
                    f"top_k of {self.column!r} needs k, how many most frequent values to give: "
                    f"k=3 (1 to 1000; got {self.k})"
                )
        elif self.k is not None:
            raise ValueError(f"{self.function} of {self.column!r}: k belongs to top_k; remove it")
        return self

    def _named(self) -> str:
        return f"aggregation {self.prefix}"

    def _check_percentiles(self) -> None:
        what = f"{self.function} of {self.column!r}"
        if self.function is not Function.APPROX_PERCENTILE:
            if self.percentiles is not None or self.relative_accuracy is not None:
                raise ValueError(
                    f"{what}: percentiles and relative_accuracy belong to approx_percentile; "
                    "remove them"
                )
            return
        if not self.percentiles:
            raise ValueError(
                f"{what} needs percentiles, fractions like percentiles=[0.5, 0.9, 0.99]"
            )
        wrong = [q for q in self.percentiles if not 0.0 <= q <= 1.0]
        if wrong:
            raise ValueError(
                f"{what}: percentiles {wrong} are not fractions in [0, 1] (p90 is 0.9)"
            )
        suffixes = [_percent(q) for q in self.percentiles]
        if len(set(suffixes)) != len(suffixes):
            raise ValueError(f"{what}: percentiles {self.percentiles} repeat")
        alpha = self.relative_accuracy
        if alpha is not None and not 1e-4 <= alpha <= 0.5:
            raise ValueError(
                f"{what}: relative_accuracy {alpha} is outside [0.0001, 0.5] (0.01 is 1%)"
            )

    @property
    def accuracy(self) -> float:
        """approx_percentile's α (relative accuracy), its default when unset."""
        return 0.01 if self.relative_accuracy is None else self.relative_accuracy

    def feature_specs(self) -> list[tuple[str, str, float | None]]:
        """(feature name, window, percentile or None) of each feature, in `feature_names`
        order."""
        if self.function is not Function.APPROX_PERCENTILE:
            names = self.feature_names()
            return [(name, w, None) for name, w in zip(names, self.windows, strict=True)]
        return [
            (f"{self.prefix}_p{_percent(q)}_{window}", window, q)
            for window in self.windows
            for q in self.percentiles or []
        ]

    @property
    def prefix(self) -> str:
        if self.name is not None:
            return self.name
        if self.column is None:
            return "count"
        if self.function is Function.APPROX_PERCENTILE:
            return self.column
        if self.function is Function.LAST_N:
            return f"{self.column}_last{self.n}"
        if self.function is Function.TOP_K:
            return f"{self.column}_top{self.k}"
        return f"{self.column}_{self.function.value}"

    def feature_names(self) -> list[str]:
        if self.function is Function.APPROX_PERCENTILE:
            return [name for name, _window, _q in self.feature_specs()]
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


def _percent(q: float) -> str:
    """A percentile's name: 0.9 -> '90', 0.999 -> '99_9', 0.5 -> '50'."""
    return f"{round(q * 100, 6):g}".replace(".", "_")


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
            elif agg.function in _PICK_FUNCTIONS and agg.column is not None:
                if schema[agg.column] not in _PICK_TYPES:
                    problems.append(
                        f"{agg.function} of {agg.column!r} (features {agg.feature_names()}) "
                        f"takes an int64, float64, bool or string column; {agg.column!r} is "
                        f"{schema[agg.column]}"
                    )
            elif agg.function is Function.TOP_K and agg.column is not None:
                if schema[agg.column] is not ValueType.STRING:
                    problems.append(
                        f"top_k of {agg.column!r} (features {agg.feature_names()}) takes a "
                        f"string column of categories; {agg.column!r} is {schema[agg.column]}: "
                        "declare the categories as a string field"
                    )
            elif agg.function in _NUMBER_FUNCTIONS and agg.column is not None:
                if schema[agg.column] not in (ValueType.INT64, ValueType.FLOAT64):
                    problems.append(
                        f"{agg.function} of {agg.column!r} (features {agg.feature_names()}) "
                        f"needs an int64 or float64 column; {agg.column!r} is "
                        f"{schema[agg.column]}: aggregate a numeric column, or use "
                        "approx_count_distinct for a categorical one"
                    )
            for feature, window, _percentile in agg.feature_specs():
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
        for agg in body["aggregations"]:
            for key in ("percentiles", "relative_accuracy", "n", "k"):
                if agg.get(key) is None:
                    agg.pop(key, None)
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
