"""What the sync and the asyncio client share: each endpoint's request and the parsing of its
answer, the mapping of error statuses to exceptions, and how long to wait before asking again.

A 503 is the one answer worth asking again: the server says it cannot serve *now* (Redis down
or slow, load shed) and when to come back (`Retry-After`), and it served nothing, so a predict
sent again is scored once. Anything else is final.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import orjson
from pydantic import TypeAdapter, ValidationError

from featurestore.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    NotFound,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from featurestore.client.results import FeatureValues, ModelSummary, Prediction

__all__ = [
    "Call",
    "Entities",
    "RequestFeatures",
    "RetryPolicy",
    "error_for",
    "features_call",
    "models_call",
    "predict_call",
]

T = TypeVar("T")
Entities = Mapping[str, Sequence[str | int] | str | int]  # join key -> a value per row (or one)
RequestFeatures = Mapping[str, Sequence[float | None] | float | None]

_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: BadRequest,
}
_MODELS = TypeAdapter(list[ModelSummary])


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request of an endpoint, and how its 200 answer becomes a typed result."""

    method: str
    path: str
    parse: Callable[[bytes], T]
    body: bytes | None = None
    params: Mapping[str, str] | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    def result(self, status: int, content: bytes, retry_after: str | None) -> T:
        """The typed result of a 2xx answer; any other status raises its `ApiError`."""
        if 200 <= status < 300:
            try:
                return self.parse(content)
            except ValidationError as exc:
                message = f"{self.name} answered a body this client cannot read: {exc}"
                raise ClientError(message) from exc
        raise error_for(self.name, status, content, retry_after)


def error_for(call: str, status: int, content: bytes, retry_after: str | None) -> ApiError:
    """The exception of an error answer, carrying the server's `detail`."""
    detail = _detail(content)
    if status == 503:
        return Unavailable(status, detail, call, _seconds(retry_after))
    return _ERRORS.get(status, ServerError)(status, detail, call)


def _detail(content: bytes) -> str:
    """The server's message: `{"detail": ...}` as every error of the API answers, else the
    start of the body (a proxy's page)."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:500].decode(errors="replace").strip() or "(empty body)"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    return orjson.dumps(detail if detail is not None else body).decode()[:1000]


def _seconds(retry_after: str | None) -> float | None:
    """`Retry-After` in seconds: a number of seconds, or an HTTP date."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Ask again after a 503, `retries` times: after the server's `Retry-After` (at most
    `max_wait` seconds), or after `backoff` x 2^attempt when it gives none."""

    retries: int = 3
    max_wait: float = 30.0
    backoff: float = 0.5

    def wait(self, error: Unavailable, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`; None: give up and raise `error`.

        >>> policy = RetryPolicy(retries=2, max_wait=10)
        >>> policy.wait(Unavailable(503, "busy", "POST /", retry_after=3.0), 0)
        3.0
        >>> policy.wait(Unavailable(503, "busy", "POST /", retry_after=None), 1)
        1.0
        >>> policy.wait(Unavailable(503, "busy", "POST /", retry_after=60.0), 1)
        10.0
        >>> policy.wait(Unavailable(503, "busy", "POST /", retry_after=1.0), 2) is None
        True
        """
        if attempt >= self.retries:
            return None
        advised = error.retry_after
        wait = self.backoff * 2**attempt if advised is None else advised
        return float(min(wait, self.max_wait))


def predict_call(
    model: str,
    entities: Entities,
    request_features: RequestFeatures | None,
    alias: str | None,
    return_features: bool,
    score_missing: bool,
    request: Mapping[str, Any] | None = None,
) -> Call[Prediction]:
    body: dict[str, Any] = {"entities": dict(entities)}
    if request_features is not None:
        body["request_features"] = dict(request_features)
    if request is not None:
        body["request"] = dict(request)
    if return_features:
        body["return_features"] = True
    if score_missing:
        body["score_missing"] = True
    return Call(
        "POST",
        f"/v1/predict/{quote(model, safe='')}",
        Prediction.model_validate_json,
        _json(body),
        None if alias is None else {"alias": alias},
    )


def features_call(
    features: str | Sequence[str], entities: Entities, request: Mapping[str, Any] | None = None
) -> Call[FeatureValues]:
    """`features` is a feature service's name, or a list of refs (`view:feature`); `request`
    holds the request fields of on-demand features (field -> a value per row)."""
    body: dict[str, Any] = {"entities": dict(entities)}
    if request is not None:
        body["request"] = dict(request)
    if isinstance(features, str):
        body["feature_service"] = features
    else:
        body["features"] = list(features)
    return Call("POST", "/v1/features", FeatureValues.model_validate_json, _json(body))


def models_call() -> Call[list[ModelSummary]]:
    return Call("GET", "/v1/models", _MODELS.validate_json)


def _json(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
