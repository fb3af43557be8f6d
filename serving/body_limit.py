"""`serving.max_body_bytes`, enforced before a body is parsed.

A declared Content-Length over the limit is refused before a byte of the body is read (the
server then delivers no more than the declared length, so nothing is counted). A body without
one (chunked) is counted as it arrives and refused as soon as it passes the limit. Either way
the 413 says which setting to change; FastAPI's own limit answers a bare "Content Too Large".
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import ServingMetrics

__all__ = ["BodyLimitMiddleware", "BodyTooLarge"]


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it as it is (not as a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes (serving.max_body_bytes); send "
            "fewer rows per request",
        )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServingMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._refuse(send)
                    return
                await self.app(scope, receive, send)  # the server holds it to that length
                return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        return counted

    async def _refuse(self, send: Send) -> None:
        self.metrics.errors.labels("BodyTooLarge", "413").inc()
        body = orjson.dumps({"detail": BodyTooLarge(self.max_bytes).detail})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread body must not be taken for a next request
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
