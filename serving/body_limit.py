"""`serving.max_body_bytes`, enforced before a body is parsed.

A declared Content-Length over the limit is refused before a byte of the body is read (the
server then delivers no more than the declared length, so nothing is counted). A body without
one (chunked) is counted as it arrives and refused as soon as it passes the limit. Either way
the 413 says which setting to change; FastAPI's own limit answers a bare "Content Too Large".
The middleware guards FastAPI's routes; the predict fast path (fastpath.py) calls the same
`limit_receive` and `refuse_too_large`.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import ServingMetrics

__all__ = ["BodyLimitMiddleware", "BodyTooLarge", "limit_receive", "refuse_too_large"]


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it as it is (not as a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes (serving.max_body_bytes); send "
            "fewer rows per request",
        )


def limit_receive(scope: Scope, receive: Receive, max_bytes: int) -> Receive | None:
    """The `receive` to read the body through, or None when the declared Content-Length is over
    the limit (answer `refuse_too_large` without reading)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > max_bytes:
                return None
            return receive  # the server holds the body to that length
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise BodyTooLarge(max_bytes)
        return message

    return counted


async def refuse_too_large(send: Send, max_bytes: int, metrics: ServingMetrics) -> None:
    metrics.errors.labels("BodyTooLarge", "413").inc()
    body = orjson.dumps({"detail": BodyTooLarge(max_bytes).detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # the unread body must not be taken for a next request
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServingMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = limit_receive(scope, receive, self.max_bytes)
        if limited is None:
            await refuse_too_large(send, self.max_bytes, self.metrics)
            return
        await self.app(scope, limited, send)
