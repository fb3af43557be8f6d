"""A Python client of the HTTP API of `fstore serve` (it speaks HTTP only: no Kafka, Redis or
registry needed): `Client` for plain code, `AsyncClient` for asyncio, typed results, errors
carrying the server's message, and 503s asked again after their `Retry-After`.

    from featurestore.client import Client

    with Client("http://127.0.0.1:8000", api_key=key) as client:
        client.predict("fraud", {"user_id": ["u1", "u2"]}).scores
        client.features("fraud", {"user_id": ["u1"]}).values("user_txn:count_1h")
        client.models()
"""

from __future__ import annotations

from featurestore.client.aio import AsyncClient
from featurestore.client.calls import RetryPolicy
from featurestore.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    NotFound,
    ServerError,
    TooLarge,
    TransportError,
    Unauthorized,
    Unavailable,
)
from featurestore.client.results import FeatureColumn, FeatureValues, ModelSummary, Prediction
from featurestore.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "FeatureColumn",
    "FeatureValues",
    "Forbidden",
    "ModelSummary",
    "NotFound",
    "Prediction",
    "RetryPolicy",
    "ServerError",
    "TooLarge",
    "TransportError",
    "Unauthorized",
    "Unavailable",
]
