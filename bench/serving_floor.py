"""The floor of bench/serving.py: the least a scoring request needs, as a bare ASGI app.

Per request: parse the JSON body, one Redis round trip (an HMGET of a plain hash per user that
the benchmark wrote with the user's 12 feature values, pipelined for a batch), one LightGBM
predict of the same model, the scores as JSON. No framework, no validation beyond what a wrong
body needs, no metrics, no logging: what is left of `POST /v1/predict` when everything a
product adds is taken away. The Redis client is synchronous and called on the event loop: in
one process that is the cheapest way to do one round trip, which is what a floor should be.

uvicorn runs it with the settings `fstore serve` gives uvicorn (`SERVER_OPTIONS`), so the two
differ only in what the app does:

    python bench/serving_floor.py --port 8001 --redis-url redis://127.0.0.1:6379/0 \\
        --prefix bench-floor --model model.txt --features 12
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import redis
import uvicorn

__all__ = ["SERVER_OPTIONS", "Floor", "floor_key"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# What `fstore serve` (serving/cli.py) passes to uvicorn besides host and port.
SERVER_OPTIONS: dict[str, Any] = {"workers": 1, "access_log": False}
# As serving/scoring.py predicts: one thread (OpenMP's start-up costs more on small batches).
PREDICT_THREADS = 1
JSON = [(b"content-type", b"application/json")]


def floor_key(prefix: str, user: str) -> str:
    """The plain hash that holds one user's feature values: fields "0".."11", floats as text
    ("nan" where the feature has no value, as a missing value reaches LightGBM)."""
    return f"{prefix}:{user}"


class Floor:
    """`POST` any path with `{"entities": {"user_id": [...]}}` -> `{"scores": [...]}`."""

    def __init__(self, redis_url: str, prefix: str, model: str, features: int) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.prefix = prefix
        self.booster = lgb.Booster(model_file=model)
        self.fields = [str(i) for i in range(features)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            users = orjson.loads(body)["entities"]["user_id"]
            if not isinstance(users, list) or not users:
                raise TypeError("user_id is not a non-empty list")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            problem = f'the body must be {{"entities": {{"user_id": ["u1", ...]}}}} ({exc})'
            await respond(send, 400, {"detail": problem})
            return
        await respond(send, 200, {"scores": self.score(users)})

    def score(self, users: list[str]) -> list[float]:
        if len(users) == 1:
            rows = [self.client.hmget(floor_key(self.prefix, users[0]), self.fields)]
        else:
            pipe = self.client.pipeline(transaction=False)
            for user in users:
                pipe.hmget(floor_key(self.prefix, user), self.fields)
            rows = pipe.execute()
        # A user the benchmark did not write has no hash: all NaN, as a user without events.
        matrix = np.array(
            [[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64
        )
        scores: list[float] = np.asarray(
            self.booster.predict(matrix, num_threads=PREDICT_THREADS)
        ).tolist()
        return scores


async def respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = orjson.dumps(payload)
    headers = [*JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True, help="the hashes' key prefix")
    parser.add_argument("--model", required=True, help="the model, LightGBM's text format")
    parser.add_argument("--features", type=int, required=True, help="values per user")
    args = parser.parse_args()
    app = Floor(args.redis_url, args.prefix, args.model, args.features)
    uvicorn.run(app, host=args.host, port=args.port, **SERVER_OPTIONS)


if __name__ == "__main__":
    main()
