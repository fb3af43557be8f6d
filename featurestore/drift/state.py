"""Where the latest drift state lives in Redis, and the reader the serving app calls.

Layout, under the feature store's namespace, all in the hash tag `{drift}` — one Redis Cluster
slot, shared with the monitor's state (streaming/monitor/state.py), since the monitor's commit
script writes both at once:
    <ns>:{drift}:models               set of the models that have drift state
    <ns>:{drift}:<model>:latest       hash; field "<version>|<role>|<kind>|<column>" = the JSON
                                      drift record of the newest closed window
    <ns>:{drift}:<model>:alerts       hash; same fields = the JSON of the open alert episode
`kind` is `feature` (column: the model's feature name), `score` (column: "score"), `input`
(a watched source column) or `performance` (column: the metric). `role` is `served` or
`shadow` (each version's traffic is tracked per role), or `source` for watched inputs.
The monitor writes these keys in the same atomic call that closes the windows they describe.

>>> latest_key("fs", "fraud")
'fs:{drift}:fraud:latest'

>>> field(3, "served", "feature", "user_txn__amount_sum_1h")
'3|served|feature|user_txn__amount_sum_1h'
"""

from __future__ import annotations

from typing import Any

import orjson

from featurestore.config import RedisSettings
from featurestore.redis_client import REQUEST, redis_errors, shared_client

__all__ = [
    "DRIFT_TAG_PREFIX",
    "alerts_key",
    "field",
    "latest_drift",
    "latest_key",
    "models_key",
    "parse_field",
]


DRIFT_TAG_PREFIX = "{namespace}:{{drift}}"
"""Where drift state and the monitor's state start (`str.format` with the namespace)."""


def models_key(namespace: str) -> str:
    return f"{DRIFT_TAG_PREFIX.format(namespace=namespace)}:models"


def latest_key(namespace: str, model: str) -> str:
    return f"{DRIFT_TAG_PREFIX.format(namespace=namespace)}:{model}:latest"


def alerts_key(namespace: str, model: str) -> str:
    return f"{DRIFT_TAG_PREFIX.format(namespace=namespace)}:{model}:alerts"


def field(version: int, role: str, kind: str, column: str) -> str:
    return f"{version}|{role}|{kind}|{column}"


def parse_field(text: str) -> tuple[int, str, str, str]:
    version, role, kind, column = text.split("|", 3)
    return int(version), role, kind, column


def latest_drift(config: RedisSettings, model: str | None = None) -> dict[str, Any]:
    """The newest drift records and open alerts of `model` (None: of every model).

    {"models": {model: {"records": [...], "alerts": [...]}}}, each list ordered by version,
    role, kind and column. A model the monitor has not reported on has no entry.
    """
    # A request is waiting: the request profile's short timeouts, on one pool per process.
    client = shared_client(config, REQUEST)
    with redis_errors(config):
        names = (
            [model]
            if model is not None
            else sorted(_text(m) for m in client.smembers(models_key(config.namespace)))
        )
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(latest_key(config.namespace, name))
            pipe.hgetall(alerts_key(config.namespace, name))
        answers = pipe.execute()
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        latest, alerts = answers[2 * i], answers[2 * i + 1]
        if latest or alerts:
            out[name] = {"records": _ordered(latest), "alerts": _ordered(alerts)}
    return {"models": out}


def _ordered(raw: dict[Any, Any]) -> list[Any]:
    return [orjson.loads(raw[key]) for key in sorted(raw, key=lambda k: parse_field(_text(k)))]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
