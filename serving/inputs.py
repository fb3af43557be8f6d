"""Request bodies, parsed from raw bytes with orjson and checked by hand.

The predict path skips pydantic on purpose (a measured cost on every request); the pydantic
models in `schemas.py` describe the same bodies for OpenAPI. Every rejection says which field is
wrong, what it holds, and what was expected.

>>> parse_predict(b'{"entities": {"user_id": "u1"}}', max_batch=10).entities
{'user_id': ['u1']}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from serving.errors import BadRequest, TooLarge

__all__ = ["FeaturesInput", "PredictInput", "parse_features", "parse_predict"]

_PREDICT_FIELDS = (
    "entities",
    "request",
    "request_features",
    "return_features",
    "score_missing",
)
_FEATURES_FIELDS = ("features", "feature_service", "entities", "request")
_PREDICT_EXAMPLE = '{"entities": {"user_id": ["u1", "u2"]}}'


@dataclass(frozen=True)
class PredictInput:
    entities: dict[str, list[Any]]  # join key -> one value per row
    rows: int
    request_features: dict[str, npt.NDArray[np.float64]]  # model feature name -> value per row
    return_features: bool
    score_missing: bool = False  # score a row whose every feature is missing (scoring.py)
    # Request fields of on-demand features: field -> one JSON value per row (on_demand.py
    # checks their types against the feature's RequestSource).
    request: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class FeaturesInput:
    features: list[str] | None
    service: str | None
    entities: dict[str, list[Any]]
    rows: int
    request: dict[str, list[Any]] = field(default_factory=dict)  # on-demand request fields


def parse_predict(body: bytes, max_batch: int) -> PredictInput:
    data = _json_object(body, _PREDICT_FIELDS, _PREDICT_EXAMPLE)
    entities, rows = _entities(data.get("entities"), max_batch)
    raw_features = data.get("request_features")
    request_features: dict[str, npt.NDArray[np.float64]] = {}
    if raw_features is not None:
        if not isinstance(raw_features, dict):
            raise BadRequest(
                "request_features must be an object of model feature name -> list of numbers "
                f"(one per row), not {_kind(raw_features)}"
            )
        for name, values in raw_features.items():
            request_features[name] = _numbers(name, values, rows)
    return_features = data.get("return_features", False)
    if not isinstance(return_features, bool):
        raise BadRequest(f"return_features must be true or false, not {_kind(return_features)}")
    score_missing = data.get("score_missing", False)
    if not isinstance(score_missing, bool):
        raise BadRequest(f"score_missing must be true or false, not {_kind(score_missing)}")
    request = _request_fields(data.get("request"), rows)
    return PredictInput(entities, rows, request_features, return_features, score_missing, request)


def parse_features(body: bytes, max_batch: int) -> FeaturesInput:
    example = '{"features": ["view:feature"], "entities": {"user_id": ["u1"]}}'
    data = _json_object(body, _FEATURES_FIELDS, example)
    features, service = data.get("features"), data.get("feature_service")
    if (features is None) == (service is None):
        raise BadRequest(
            'give either "features" (a list of refs like "view:feature") or "feature_service" '
            "(a name), not both or neither"
        )
    if features is not None and (
        not isinstance(features, list)
        or not features
        or not all(isinstance(ref, str) for ref in features)
    ):
        raise BadRequest(
            '"features" must be a non-empty list of refs like "view:feature", '
            f"not {features!r:.200}"
        )
    if service is not None and not isinstance(service, str):
        raise BadRequest(f'"feature_service" must be a name, not {_kind(service)}')
    entities, rows = _entities(data.get("entities"), max_batch)
    return FeaturesInput(
        features, service, entities, rows, _request_fields(data.get("request"), rows)
    )


def _request_fields(raw: Any, rows: int) -> dict[str, list[Any]]:
    """`request`: the request fields on-demand features compute from, field -> one value per
    row (a single value is one row's)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest(
            "request must be an object of request field -> values (one per row), like "
            f'{{"amount": [12.5]}}, not {_kind(raw)}'
        )
    fields: dict[str, list[Any]] = {}
    for name, values in raw.items():
        if not isinstance(values, list):
            values = [values]
        if len(values) != rows:
            raise BadRequest(
                f"request[{name!r}] has {len(values)} values for {rows} rows; give one per row"
            )
        fields[name] = values
    return fields


def _json_object(body: bytes, fields: tuple[str, ...], example: str) -> dict[str, Any]:
    if not body:
        raise BadRequest(f"the request body is empty; send a JSON object like {example}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object like {example}")
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise BadRequest(f"unknown fields {unknown!r:.200}; expected some of {list(fields)}")
    return data


def _entities(raw: Any, max_batch: int) -> tuple[dict[str, list[Any]], int]:
    if not isinstance(raw, dict) or not raw:
        raise BadRequest(
            'entities must be a non-empty object of join key -> values, like {"user_id": ["u1"]}'
            f" (got {_kind(raw)})"
        )
    entities: dict[str, list[Any]] = {}
    for key, values in raw.items():
        if not isinstance(values, list):
            values = [values]  # a single value is one row
        for i, value in enumerate(values):
            # Entity keys are joined as text; a float (1.0 vs 1) or a bool would silently miss.
            if type(value) is not str and type(value) is not int:
                raise BadRequest(
                    f"entities[{key!r}][{i}] is {_kind(value)}; entity key values are strings "
                    "or integers"
                )
        entities[key] = values
    lengths = {key: len(values) for key, values in entities.items()}
    if len(set(lengths.values())) != 1:
        raise BadRequest(f"entity key lists differ in length: {lengths}; give one value per row")
    rows = next(iter(lengths.values()))
    if rows == 0:
        raise BadRequest("entities hold no rows; give at least one value per join key")
    if rows > max_batch:
        raise TooLarge(
            f"{rows} rows in one request; this server takes at most {max_batch} "
            "(serving.max_batch): split the request"
        )
    return entities, rows


def _numbers(name: str, values: Any, rows: int) -> npt.NDArray[np.float64]:
    if not isinstance(values, list):
        if rows != 1:
            raise BadRequest(
                f"request_features[{name!r}] must be a list of {rows} numbers (one per row)"
            )
        values = [values]
    if len(values) != rows:
        raise BadRequest(
            f"request_features[{name!r}] has {len(values)} values for {rows} rows; "
            "give one per row (null for unknown)"
        )
    for i, value in enumerate(values):
        if value is not None and (type(value) is not float and type(value) is not int):
            raise BadRequest(
                f"request_features[{name!r}][{i}] is {_kind(value)}; feature values are "
                "numbers (or null for unknown)"
            )
    # None becomes NaN: the model scores it as missing, as it was trained to.
    return np.array(values, dtype=np.float64)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    text = orjson.dumps(value).decode() if not isinstance(value, bytes) else repr(value)
    name = {
        bool: "a boolean",
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
    return f"{name} ({text[:60]})"
