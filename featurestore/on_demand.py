"""Request-time (on-demand) features: a Python function over columns, run at read time.

An `OnDemandFeature` names its inputs — fields of the request (`RequestSource`, typed) and
features of views (`view:feature` refs) — and its typed outputs. Its function takes a dict of
numpy arrays (one per input, one value per row: request fields as their type, view features as
float64 with NaN for missing) and returns a dict of arrays, one per output, of the same length.
The same function, compiled from the same stored source, runs online (`get_online_features`,
`/v1/features`, `/v1/predict`) and offline (`get_historical_features`, where the entity rows
carry the request fields as columns), so training and serving agree by construction.

The function is stored as source code (part of the fingerprint: a changed function is a new
version) and compiled where it runs, with `np` (numpy) and `math` in scope: it must not use
other names of its module (import what else it needs inside its body).

>>> txn = RequestSource(name="txn", schema={"amount": "float64"})
>>> @on_demand_feature(request=[txn], features=["user_txn:amount_mean_1h"],
...                    outputs={"amount_ratio": "float64"})
... def amount_vs_mean(inputs):
...     return {"amount_ratio": inputs["amount"] / inputs["amount_mean_1h"]}
>>> amount_vs_mean.name, amount_vs_mean.input_names()
('amount_vs_mean', ['amount', 'amount_mean_1h'])
>>> compute(amount_vs_mean, {"amount": np.array([10.0]), "amount_mean_1h": np.array([4.0])}, 1)
{'amount_ratio': array([2.5])}
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import Field, model_validator

from featurestore.definitions import ValueType, _Definition
from featurestore.errors import DefinitionError, OnDemandError, RequestError

__all__ = [
    "OUTPUT_TYPES",
    "F64",
    "REQUEST_TYPES",
    "OnDemandFeature",
    "PreparedFeature",
    "RegisteredOnDemand",
    "RequestSource",
    "compute",
    "evaluate",
    "on_demand_feature",
    "request_column",
]

Column = npt.NDArray[Any]
F64 = npt.NDArray[np.float64]
REQUEST_TYPES = (ValueType.FLOAT64, ValueType.INT64, ValueType.BOOL, ValueType.STRING)
OUTPUT_TYPES = (ValueType.FLOAT64, ValueType.INT64, ValueType.BOOL)  # models score numbers
_NUMPY_TYPES = {ValueType.FLOAT64: np.float64, ValueType.INT64: np.int64, ValueType.BOOL: np.bool_}
_ALLOWED = {ValueType.FLOAT64: "fiub", ValueType.INT64: "iub", ValueType.BOOL: "b"}
_MESSAGE_CHARS = 300  # an exception message is cut here in answers
_JSON_NUMBERS = frozenset({float, int, type(None)})
_JSON_STRINGS = frozenset({str, type(None)})
_F64_DTYPE = np.dtype(np.float64)  # native float64: numpy's builtin dtypes are singletons


class RequestSource(_Definition):
    """Fields the caller sends with each request (and a training set's entity rows carry)."""

    name: str
    schema_: dict[str, ValueType] = Field(alias="schema")
    description: str = ""

    model_config = _Definition.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _check(self) -> RequestSource:
        if not self.schema_:
            raise ValueError(f"request source {self.name!r} has no fields")
        for field, kind in self.schema_.items():
            if kind not in REQUEST_TYPES:
                raise ValueError(
                    f"request source {self.name!r}: field {field!r} is {kind}; request fields "
                    f"are one of {[str(t) for t in REQUEST_TYPES]}"
                )
        return self


class OnDemandFeature(_Definition):
    """A function of request fields and view features, computed at read time.

    Refer to an output as `name:output` (`name@version:output` pinned), like a view's feature.
    Define it with the `on_demand_feature` decorator, which stores the function's source.
    """

    name: str
    request: list[RequestSource] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)  # view refs; pinned when registered
    outputs: dict[str, ValueType]
    function_name: str
    function_source: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> OnDemandFeature:
        problems: list[str] = []
        if not self.outputs:
            problems.append("declares no outputs")
        for output, kind in self.outputs.items():
            if kind not in OUTPUT_TYPES:
                problems.append(
                    f"output {output!r} is {kind}; outputs are one of "
                    f"{[str(t) for t in OUTPUT_TYPES]}"
                )
        if not self.request and not self.features:
            problems.append("has no inputs (request fields or view features)")
        names = self.input_names()
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"inputs {repeated} repeat (one name per request field or feature)")
        if not problems:
            try:
                _compiled(self.function_source, self.function_name)
            except DefinitionError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError(f"on-demand feature {self.name!r}: " + "; ".join(problems))
        return self

    def input_names(self) -> list[str]:
        """The keys of the dict the function receives: request fields, then feature names."""
        fields = [field for source in self.request for field in source.schema_]
        return fields + [ref.rsplit(":", 1)[-1] for ref in self.features]

    def request_fields(self) -> dict[str, ValueType]:
        return {field: kind for source in self.request for field, kind in source.schema_.items()}

    def feature_names(self) -> list[str]:
        return list(self.outputs)

    @property
    def function(self) -> Callable[[dict[str, Column]], Any]:
        return _compiled(self.function_source, self.function_name)

    def fingerprint(self) -> str:
        """A hash of the inputs, outputs and the function's source: a new one, a new version."""
        body = self.model_dump(mode="json", by_alias=True, exclude={"description", "tags"})
        for source in body["request"]:
            source.pop("description", None)
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def on_demand_feature(
    *,
    outputs: Mapping[str, ValueType | str],
    request: Sequence[RequestSource] = (),
    features: Sequence[str] = (),
    name: str | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], OnDemandFeature]:
    """Decorate `def f(inputs) -> {output: array}` into an `OnDemandFeature` named after it."""

    def wrap(function: Callable[..., Any]) -> OnDemandFeature:
        return OnDemandFeature(
            name=name or function.__name__,
            request=list(request),
            features=list(features),
            outputs={k: ValueType(v) for k, v in outputs.items()},
            function_name=function.__name__,
            function_source=_source(function),
            description=description,
            tags=dict(tags or {}),
        )

    return wrap


@dataclass(frozen=True)
class RegisteredOnDemand:
    """One version of an on-demand feature as registered (its view refs pinned)."""

    feature: OnDemandFeature
    version: int
    fingerprint: str
    created_at: datetime  # UTC

    @property
    def name(self) -> str:
        return self.feature.name


def request_column(feature: str, field: str, kind: ValueType, values: Any, rows: int) -> Column:
    """One request field's values as a read-only array: `_request_column`'s conversion.

    >>> request_column("f", "amount", ValueType.FLOAT64, [1, None], 2)
    array([ 1., nan])
    """
    if type(values) is list and len(values) == rows:
        # A request's JSON values, the predict path's case: numbers or strings (and nulls),
        # told by their types at C speed; anything else goes through the checks below.
        if kind is ValueType.FLOAT64 and set(map(type, values)) <= _JSON_NUMBERS:
            column: Column = np.array(values, dtype=np.float64)
        elif kind is ValueType.STRING and set(map(type, values)) <= _JSON_STRINGS:
            column = np.array(values, dtype=object)
        else:
            column = _request_column(feature, field, kind, values, rows)
    else:
        column = _request_column(feature, field, kind, values, rows)
    if column is not values and column.flags.owndata:
        column.setflags(write=False)  # shared by the functions of one request
    return column


def _request_column(feature: str, field: str, kind: ValueType, values: Any, rows: int) -> Column:
    """One request field's values (a list from a request, an array from entity rows) as the
    array the function receives; the same conversion online and offline.

    >>> request_column("f", "amount", ValueType.FLOAT64, [1, None], 2)
    array([ 1., nan])
    """
    if len(values) != rows:
        raise RequestError(
            f"request field {field!r} (of on-demand feature {feature!r}) has {len(values)} "
            f"values for {rows} rows; give one per row"
        )
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        # A training set's column: checked by its dtype, not value by value.
        allowed = {ValueType.FLOAT64: "fiu", ValueType.INT64: "iu", ValueType.BOOL: "b"}
        if values.dtype.kind not in allowed.get(kind, ""):
            raise RequestError(
                f"request field {field!r} (of on-demand feature {feature!r}) must hold {kind} "
                f"values, not {values.dtype}"
            )
        return values.astype(_NUMPY_TYPES[kind], copy=False)
    try:
        if kind is ValueType.FLOAT64:
            # JSON's numbers and nulls, checked by their types at C speed; anything else
            # (numpy scalars, bools, strings) by the check below.
            if not set(map(type, values)) <= _JSON_NUMBERS and any(
                isinstance(v, bool | str) for v in values
            ):
                raise TypeError("a number (or null) was expected")
            return np.asarray(values, dtype=np.float64)
        if kind is ValueType.STRING:
            if not set(map(type, values)) <= _JSON_STRINGS and not all(
                v is None or isinstance(v, str) for v in values
            ):
                raise TypeError("a string was expected")
            return np.asarray(values, dtype=object)
        if any(v is None for v in values):
            raise TypeError("null is allowed in float64 fields only")
        if kind is ValueType.INT64:
            if any(isinstance(v, bool | float | str) for v in values):
                raise TypeError("an integer was expected")
            return np.asarray(values, dtype=np.int64)
        if not all(isinstance(v, bool | np.bool_) for v in values):
            raise TypeError("true or false was expected")
        return np.asarray(values, dtype=np.bool_)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(
            f"request field {field!r} (of on-demand feature {feature!r}) must hold {kind} "
            f"values: {exc}"
        ) from None


@dataclass(frozen=True, eq=False)
class PreparedFeature:
    """An on-demand feature ready to run: its compiled function and its inputs and outputs as
    tuples. Serving prepares each once, when it loads a model; a read prepares its own."""

    feature: OnDemandFeature
    function: Callable[[dict[str, Column]], Any]
    fields: tuple[tuple[str, ValueType], ...]  # request field, type
    features: tuple[tuple[str, str], ...]  # view ref, input name
    outputs: tuple[tuple[str, ValueType], ...]
    output_names: frozenset[str]
    # Per output: its name, type, the dtype kinds it accepts, whether infinity is checked.
    checks: tuple[tuple[str, ValueType, str, bool], ...]

    @classmethod
    def of(cls, feature: OnDemandFeature) -> PreparedFeature:
        outputs = tuple(feature.outputs.items())
        return cls(
            feature,
            feature.function,
            tuple(feature.request_fields().items()),
            tuple((ref, ref.rsplit(":", 1)[-1]) for ref in feature.features),
            outputs,
            frozenset(name for name, _ in outputs),
            tuple(
                (name, kind, _ALLOWED[kind], kind is ValueType.FLOAT64) for name, kind in outputs
            ),
        )


def compute(
    feature: OnDemandFeature | PreparedFeature, inputs: Mapping[str, Column], rows: int
) -> dict[str, F64]:
    """Run the function on `inputs` (every name of `input_names()`) and check what it returns:
    one array of `rows` values per declared output, of its type. Outputs come back as float64
    (NaN: missing, allowed in float64 outputs only), as every feature value is read.

    Raises `OnDemandError` naming the feature and the problem, never a wrong value.
    """
    ready = _prepared(feature)
    return _run(ready, {key: _read_only(value) for key, value in inputs.items()}, rows)


def _read_only(value: Any) -> Column:
    """The input as an array the function cannot write to (a function that writes its inputs
    fails loudly); one already read-only — request columns, serving's reads — as it is."""
    column = value if type(value) is np.ndarray else np.asarray(value)
    if column.flags.writeable:
        column = column.view()
        column.flags.writeable = False
    return column


def _run(ready: PreparedFeature, given: dict[str, Column], rows: int) -> dict[str, F64]:
    """The function over read-only inputs, and its outputs checked (`compute`)."""
    name = ready.feature.name
    try:
        result = ready.function(given)
    except Exception as exc:
        message = str(exc)[:_MESSAGE_CHARS]
        raise OnDemandError(
            f"on-demand feature {name!r} failed: {type(exc).__name__}: {message}"
        ) from exc
    if type(result) is not dict and not isinstance(result, Mapping):
        raise OnDemandError(
            f"on-demand feature {name!r} returned {type(result).__name__}; it must "
            f"return a dict of output name -> array ({sorted(ready.output_names)})"
        )
    if result.keys() != ready.output_names:
        raise OnDemandError(
            f"on-demand feature {name!r} returned outputs {sorted(map(str, result))}; "
            f"it declares {sorted(ready.output_names)}; return exactly the declared outputs"
        )
    checked: dict[str, F64] = {}
    for output, kind, allowed, finite in ready.checks:
        value = result[output]
        if (
            type(value) is np.ndarray
            and value.dtype is _F64_DTYPE
            and finite
            and value.shape == (rows,)
            and rows <= 16
            and not any(map(math.isinf, value.tolist()))
        ):
            checked[output] = value  # the usual float64 output, every check passed
        else:
            checked[output] = _checked(name, output, kind, allowed, finite, value, rows)
    return checked


def evaluate(
    feature: OnDemandFeature | PreparedFeature,
    request: Mapping[str, Any],
    view_values: Mapping[str, F64],
    rows: int,
    converted: dict[tuple[str, ValueType], Column] | None = None,
) -> dict[str, F64]:
    """`compute` with its inputs gathered: request fields by name (lists or arrays, one value
    per row) and view features by the feature's (pinned) refs, float64 with NaN for missing.
    A request lacking a field the feature needs is a `RequestError` naming the field.
    `converted` keeps the request fields converted for one feature, for the next of the same
    request (the arrays are read-only to the functions)."""
    ready = feature if type(feature) is PreparedFeature else _prepared(feature)
    inputs: dict[str, Column] = {}
    for key in ready.fields:
        column = converted.get(key) if converted is not None else None
        if column is None:
            field, kind = key
            if field not in request:
                raise RequestError(
                    f"on-demand feature {ready.feature.name!r} needs request field {field!r} "
                    f"({kind}); send it in the request (offline: a column of the entity rows); "
                    f"given: {sorted(request)}"
                )
            column = _read_only(
                request_column(ready.feature.name, field, kind, request[field], rows)
            )
            if converted is not None:
                converted[key] = column
        inputs[key[0]] = column
    for ref, name in ready.features:
        inputs[name] = _read_only(view_values[ref])
    return _run(ready, inputs, rows)


def _prepared(feature: OnDemandFeature | PreparedFeature) -> PreparedFeature:
    return feature if isinstance(feature, PreparedFeature) else PreparedFeature.of(feature)


def _checked(
    feature: str, output: str, kind: ValueType, allowed: str, finite: bool, value: Any, rows: int
) -> F64:
    """One output as float64, or an `OnDemandError` saying what is wrong with it."""
    array = value if type(value) is np.ndarray else np.asarray(value)
    if array.shape != (rows,):
        raise OnDemandError(
            f"on-demand feature {feature!r}, output {output!r}: returned shape {array.shape} "
            f"for {rows} rows; return one value per row"
        )
    dtype = array.dtype
    if dtype.kind not in allowed:
        raise OnDemandError(
            f"on-demand feature {feature!r}, output {output!r}: returned dtype {array.dtype}; "
            f"it is declared {kind}; return {kind} values or declare the type it returns"
        )
    out: F64 = array if dtype is _F64_DTYPE else array.astype(np.float64)
    if finite and (any(map(math.isinf, out.tolist())) if rows <= 16 else bool(np.isinf(out).any())):
        raise OnDemandError(
            f"on-demand feature {feature!r}, output {output!r}: returned an infinite value; "
            "return NaN for missing"
        )
    return out


def _source(function: Callable[..., Any]) -> str:
    """The function's own source, without its decorators (they ran already)."""
    try:
        text = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as exc:
        raise DefinitionError(
            f"the source of {function.__name__!r} cannot be read ({exc}); define it in a file"
        ) from None
    tree = ast.parse(text)
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef):
        raise DefinitionError(f"{function.__name__!r} must be a plain `def` function")
    return "\n".join(text.splitlines()[node.lineno - 1 :]) + "\n"


@lru_cache(maxsize=256)
def _compiled(source: str, name: str) -> Callable[[dict[str, Column]], Any]:
    """The function compiled from its stored source, in a scope holding `np` and `math`."""
    scope: dict[str, Any] = {"np": np, "numpy": np, "math": math}
    try:
        code = compile(source, f"<on-demand {name}>", "exec")
        exec(code, scope)  # noqa: S102 - the registry's own definitions, written by its users
    except Exception as exc:
        raise DefinitionError(
            f"the function {name!r} does not compile: {type(exc).__name__}: {exc}"
        ) from None
    function = scope.get(name)
    if not callable(function):
        raise DefinitionError(f"the source does not define a function {name!r}")
    return function  # type: ignore[no-any-return]
