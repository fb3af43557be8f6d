"""Exceptions of the scoring API. Each carries the HTTP status it answers with, and a message
that says what was wrong and what to do: clients read it, so it is never a stack trace.

A refused promotion (409) is the core's `PromotionRefused`, answered in error_responses.py.
"""

from __future__ import annotations

from featurestore.errors import FeatureStoreError

__all__ = [
    "BadRequest",
    "Forbidden",
    "NotFound",
    "Overloaded",
    "RateLimited",
    "ServingError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]


class ServingError(FeatureStoreError):
    """Base class of every error raised by `serving`."""

    status_code = 500


class BadRequest(ServingError):
    """The request body or parameters are malformed: wrong types, lengths, unknown features."""

    status_code = 422


class NotFound(ServingError):
    """No such model, alias or version."""

    status_code = 404


class TooLarge(ServingError):
    """More entity rows than `serving.max_batch`."""

    status_code = 413


class Unauthorized(ServingError):
    """The endpoint needs an API key and the request brought none, or an unknown, expired or
    revoked one."""

    status_code = 401


class Forbidden(ServingError):
    """The caller's API key lacks the scope the endpoint needs."""

    status_code = 403


class Unavailable(ServingError):
    """A dependency is down (Redis) or a model could not be loaded: retry later (answered with
    `Retry-After: retry_after_s`)."""

    status_code = 503
    retry_after_s = 1.0


class Overloaded(Unavailable):
    """This process already has `serving.max_in_flight` requests in flight: refused at once,
    rather than queued behind them (serving/shedding.py)."""


class RateLimited(ServingError):
    """The caller's API key is over its request rate (`fstore keys create --rate`): answered
    429 with `Retry-After`."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
