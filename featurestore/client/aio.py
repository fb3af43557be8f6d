"""`AsyncClient`: the HTTP API from asyncio code, with the same calls, results and errors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
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
from featurestore.client.sync import http_options

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """`Client` for asyncio: `await client.predict(...)`; many calls may run at once over its
    pool of keep-alive connections. Use it within one event loop.

    >>> async with AsyncClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     await client.models()
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
        self._http = httpx.AsyncClient(
            base_url=http.base_url, headers=http.headers, timeout=http.timeout, limits=http.limits
        )

    async def predict(
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
        """As `Client.predict`."""
        call = predict_call(
            model, entities, request_features, alias, return_features, score_missing, request
        )
        return await self._send(call)

    async def features(
        self,
        features: str | Sequence[str],
        entities: Entities,
        request: Mapping[str, Any] | None = None,
    ) -> FeatureValues:
        """As `Client.features`."""
        return await self._send(features_call(features, entities, request))

    async def models(self) -> list[ModelSummary]:
        """As `Client.models`."""
        return await self._send(models_call())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
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
            await asyncio.sleep(wait)
