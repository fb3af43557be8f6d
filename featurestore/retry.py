"""Waiting out an online-store outage.

Every writer of state (the feature writer, the drift monitor) must not lose or skip a batch
because Redis is briefly down or refusing: a call failing with `OnlineStoreError` — Redis
unreachable or silent, or answering an error reply that says "not now" (LOADING, BUSY,
READONLY, OOM, MASTERDOWN, ...: a `RedisUnavailable`, classified by
`featurestore.redis_client.redis_errors`) — is tried again, with exponential backoff capped at
5 s, until it succeeds or the caller is stopping. Retrying is safe because each such call is
atomic and checked against stored positions. Any other error reply (WRONGTYPE, a script error)
is a bug that no wait will cure: it is raised at once, as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from featurestore.errors import OnlineStoreError

__all__ = ["Retry", "retry_online"]

_T = TypeVar("_T")
_log = logging.getLogger("fstore.retry")


class Retry(Protocol):
    """How a writer runs a call to the online store (e.g. `ConsumerLoop.retry`)."""

    def __call__(self, call: Callable[[], _T], /) -> _T: ...


def retry_online(
    call: Callable[[], _T],
    stopping: Callable[[], bool] = lambda: False,
    log: logging.Logger = _log,
) -> _T:
    """`call()`, tried again while it raises `OnlineStoreError` and `stopping()` is false.

    >>> attempts = iter([OnlineStoreError("Redis at redis://h:6379/0 is unreachable"), None])
    >>> def flaky() -> str:
    ...     if (error := next(attempts)) is not None:
    ...         raise error
    ...     return "done"
    >>> import unittest.mock
    >>> with unittest.mock.patch("time.sleep"):
    ...     retry_online(flaky)
    'done'
    """
    delay = 0.2
    while True:
        try:
            return call()
        except OnlineStoreError as exc:
            if stopping():
                raise
            log.warning("%s; retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
