"""`POST /v1/predict/{model}` answered in raw ASGI, in front of FastAPI.

Per request, FastAPI's routing, dependency solving, middlewares and exception handling cost
more CPU than reading the features and scoring one entity. This path does what the route does
with the same pieces — the body limit (body_limit.py), the API key (auth.py),
`Predictor.predict`, error answers (error_responses.py), the route's latency metric — and
nothing else. Every other request (another path or method, or a root path to strip) goes to
FastAPI untouched. tests/serving/test_fastpath.py compares the two ways in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from serving.body_limit import limit_receive, refuse_too_large
from serving.error_responses import ANSWERED, error_response
from serving.metrics import Children
from serving.routes.predict import ROUTE
from serving.state import ServingState

__all__ = ["PredictFastPath"]

_PREFIX = ROUTE.removesuffix("{model}")
_JSON = b"application/json"


class PredictFastPath:
    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.predictor = state.predictor
        self.keys = state.keys
        self.metrics = state.metrics
        self.max_bytes = state.config.max_body_bytes
        self._latency = Children(state.metrics.route_latency)

    def takes(self, scope: Scope) -> bool:
        """Whether FastAPI would route this request to `predict`: a POST whose path is the
        prefix and one segment (the route's `{model}` matches `[^/]+`)."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return False
        path: str = scope["path"]
        start = len(_PREFIX)
        return path.startswith(_PREFIX) and len(path) > start and path.find("/", start) < 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        try:
            status, after = await self._answer(scope, receive, send)
        except ClientDisconnect:
            return  # the client left before its body arrived: nobody to answer
        except Exception:
            self._latency(ROUTE, "POST", 500).observe(time.perf_counter() - start)
            raise
        self._latency(ROUTE, "POST", status).observe(time.perf_counter() - start)
        if after is not None:
            after()  # the answer is out: metrics, prediction log, shadow job

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[int, Callable[[], None] | None]:
        limited = limit_receive(scope, receive, self.max_bytes)
        if limited is None:
            await refuse_too_large(send, self.max_bytes, self.metrics)
            return 413, None
        response: Response
        try:
            model = scope["path"][len(_PREFIX) :]
            self.keys.authorize_scope(scope, f"predict:{model}")  # before the body is read
            body = await _body(limited)
            scored = await self.predictor.predict(model, body, _alias(scope["query_string"]))
        except ANSWERED as exc:
            response = error_response(exc, self.metrics)
        except ClientDisconnect:
            raise
        except Exception:
            # A bug: the plain 500 that FastAPI's ServerErrorMiddleware sends, then raised for
            # the server to log, as FastAPI does.
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        else:
            # The headers starlette's Response(answer, media_type="application/json") has.
            answer = scored.answer
            headers = [(b"content-length", str(len(answer)).encode()), (b"content-type", _JSON)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer})
            return 200, scored.after
        await response(scope, receive, send)
        return response.status_code, None


async def _body(receive: Receive) -> bytes:
    """The whole body, as starlette's `Request.body()` reads it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def _alias(query: bytes) -> str | None:
    """`?alias=` as FastAPI reads the query: starlette's parsing, the last value wins."""
    if not query:
        return None
    alias = None
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == "alias":
            alias = value
    return alias
