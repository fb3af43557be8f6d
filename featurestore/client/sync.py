"""`Client`: the HTTP API from Python, one pool of keep-alive connections per client."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import httpx2 as httpx

from featurestore.client.calls import (
    Call,
    Entities,
    RequestFeatures,
    RetryPolicy,
    features_call,
    models_call,
    predict_call,
)
from featurestore.client.errors import TransportError, Unavailable
from featurestore.client.results import FeatureValues, ModelSummary, Prediction

__all__ = ["Client", "HttpOptions", "http_options"]

T = TypeVar("T")


@dataclass(frozen=True)
class HttpOptions:
    """What both clients give httpx: the base URL, the bearer key, timeouts and the pool (its
    connections kept alive between calls, up to `max_connections`)."""

    base_url: str
    headers: dict[str, str]
    timeout: httpx.Timeout
    limits: httpx.Limits


def http_options(
    url: str, api_key: str | None, timeout: float, max_connections: int
) -> HttpOptions:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return HttpOptions(url.rstrip("/"), headers, httpx.Timeout(timeout), limits)


class Client:
    """A client of `fstore serve`: reuse one, its connections stay open between calls.

    >>> with Client("http://127.0.0.1:8000", api_key="...") as client:  # doctest: +SKIP
    ...     client.predict("fraud", {"user_id": ["u1", "u2"]}).scores
    [0.03, 0.91]

    A 503 (the server cannot serve now) is asked again after its `Retry-After`, `retries`
    times; every other error raises at once, with the server's message (`client.errors`).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        max_connections: int = 20,
    ) -> None:
        self.url = url
        self.retry = RetryPolicy(retries=retries, max_wait=max_retry_wait)
        http = http_options(url, api_key, timeout, max_connections)
        self._http = httpx.Client(
            base_url=http.base_url, headers=http.headers, timeout=http.timeout, limits=http.limits
        )

    def predict(
        self,
        model: str,
        entities: Entities,
        request_features: RequestFeatures | None = None,
        *,
        alias: str | None = None,
        return_features: bool = False,
        score_missing: bool = False,
        request: Mapping[str, Any] | None = None,
    ) -> Prediction:
        """Score entity rows (join key -> a value per row) with the model's traffic split, or
        with one `alias`; `request_features` adds request-time values by feature name, and
        `request` the request fields of on-demand features (field -> a value per row)."""
        call = predict_call(
            model, entities, request_features, alias, return_features, score_missing, request
        )
        return self._send(call)

    def features(
        self,
        features: str | Sequence[str],
        entities: Entities,
        request: Mapping[str, Any] | None = None,
    ) -> FeatureValues:
        """Online feature values: `features` is a feature service's name or a list of refs."""
        return self._send(features_call(features, entities, request))

    def models(self) -> list[ModelSummary]:
        """The models the server knows, with their versions, aliases and traffic."""
        return self._send(models_call())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, content=call.body, params=call.params
                )
            except httpx.TransportError as exc:
                raise TransportError(f"{call.name} to {self.url} failed: {exc!r}") from exc
            try:
                return call.result(
                    response.status_code, response.content, response.headers.get("Retry-After")
                )
            except Unavailable as refused:
                wait = self.retry.wait(refused, attempt)
                if wait is None:
                    raise
            attempt += 1
            time.sleep(wait)
