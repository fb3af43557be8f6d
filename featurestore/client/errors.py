"""What a call to the HTTP API can end in, besides its result: the server's answer to a bad
request, its refusal, its outage, or no answer at all. Each error's message is the server's own
`detail` (what was wrong and what to do), followed by the call and the status."""

from __future__ import annotations

from featurestore.errors import FeatureStoreError

__all__ = [
    "ApiError",
    "BadRequest",
    "ClientError",
    "Conflict",
    "Forbidden",
    "NotFound",
    "ServerError",
    "TooLarge",
    "TransportError",
    "Unauthorized",
    "Unavailable",
]


class ClientError(FeatureStoreError):
    """Base class of every error of `featurestore.client`."""


class TransportError(ClientError):
    """The server was not reached, or did not answer in time (nothing was answered)."""


class ApiError(ClientError):
    """The server answered with an error status; `detail` is its message."""

    def __init__(self, status: int, detail: str, call: str) -> None:
        super().__init__(f"{detail} ({call} answered {status})")
        self.status = status
        self.detail = detail
        self.call = call


class BadRequest(ApiError):
    """422 (or 400): malformed body, unknown features or service, missing entity keys."""


class Unauthorized(ApiError):
    """401: the endpoint needs an API key, and none or a wrong one was sent."""


class Forbidden(ApiError):
    """403: the key may not do this, or the endpoint is turned off."""


class NotFound(ApiError):
    """404: no such model, alias or version."""


class Conflict(ApiError):
    """409: a change refused (a promotion below the metric gate)."""


class TooLarge(ApiError):
    """413: more rows than serving.max_batch, or too large a body."""


class Unavailable(ApiError):
    """503: the server cannot serve now (Redis down or slow, load shed, a model not loaded);
    raised once the client's retries are spent. `retry_after` is the server's last advice."""

    def __init__(self, status: int, detail: str, call: str, retry_after: float | None) -> None:
        super().__init__(status, detail, call)
        self.retry_after = retry_after


class ServerError(ApiError):
    """Any other status: a bug of the server (500) or of something between."""
