"""Drift over time and recent alert events, kept in Redis for the dashboard.

`state.py` holds only the newest window per column and the open alert episodes; a chart of
drift over time and a list of alerts that already resolved need the past too. Both are capped
lists (LPUSH + LTRIM in one MULTI), newest at the head, under the feature store's namespace:
    {ns}:drift:{model}:history        JSON drift records of closed windows, per model
    {ns}:drift:alert-log              JSON alert events (`alert` and `resolved`), all models
The monitor appends after its windows commit. Its events are at least once, so a window may be
appended twice after a crash: the readers keep one record per window and column.

>>> history_key("fs", "fraud")
'fs:drift:fraud:history'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import redis

from featurestore.config import RedisSettings
from featurestore.redis_client import REQUEST, redis_errors, shared_client

__all__ = [
    "ALERT_LOG_LIMIT",
    "HISTORY_LIMIT",
    "alert_log_key",
    "drift_history",
    "history_key",
    "recent_alerts",
    "record_alerts",
    "record_history",
]

# A model with 30 features, served and shadow, closing a window a minute: 60 records a
# minute, so about five and a half hours of history. Charts need no more.
HISTORY_LIMIT = 20_000
ALERT_LOG_LIMIT = 1_000

# What makes a record or an event the same one when it arrives twice.
_RECORD_IDENTITY = ("version", "role", "kind", "column", "window_start")
_EVENT_IDENTITY = ("event", "episode")


def history_key(namespace: str, model: str) -> str:
    return f"{namespace}:drift:{model}:history"


def alert_log_key(namespace: str) -> str:
    return f"{namespace}:drift:alert-log"


def record_history(
    client: redis.Redis,
    namespace: str,
    model: str,
    records: Iterable[dict[str, Any]],
    max_records: int = HISTORY_LIMIT,
) -> None:
    """Append `model`'s drift records (oldest first, as windows close) to its capped history."""
    _append(client, history_key(namespace, model), records, max_records)


def record_alerts(
    client: redis.Redis,
    namespace: str,
    events: Iterable[dict[str, Any]],
    max_events: int = ALERT_LOG_LIMIT,
) -> None:
    """Append alert events (`streaming.monitor.alerts` builds them) to the capped alert log."""
    _append(client, alert_log_key(namespace), events, max_events)


def drift_history(config: RedisSettings, model: str, limit: int = 2_000) -> list[dict[str, Any]]:
    """The newest `limit` drift records of `model`, oldest to newest, one per window and column.

    [] when the monitor has recorded none.
    """
    raw = _newest(config, history_key(config.namespace, model), limit)
    return list(reversed(_unique(raw, _RECORD_IDENTITY)))


def recent_alerts(config: RedisSettings, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` alert events of every model, newest first."""
    return _unique(_newest(config, alert_log_key(config.namespace), limit), _EVENT_IDENTITY)


def _append(client: redis.Redis, key: str, items: Iterable[dict[str, Any]], cap: int) -> None:
    if cap < 1:
        raise ValueError(f"the cap of {key} must be at least 1, not {cap}")
    encoded = [orjson.dumps(item) for item in items]
    if not encoded:
        return
    pipe = client.pipeline(transaction=True)
    pipe.lpush(key, *encoded)
    pipe.ltrim(key, 0, cap - 1)
    with redis_errors(client, f"appending to {key}"):
        pipe.execute()


def _newest(config: RedisSettings, key: str, limit: int) -> list[Any]:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    # A dashboard request is waiting: the request profile, on one pool per process.
    with redis_errors(config):
        raw = shared_client(config, REQUEST).lrange(key, 0, limit - 1)
    return [orjson.loads(item) for item in raw]


def _unique(newest_first: list[Any], identity: tuple[str, ...]) -> list[Any]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for item in newest_first:
        key = tuple(str(item.get(name)) for name in identity) if isinstance(item, dict) else ()
        if key and key in seen:
            continue
        seen.add(key)
        out.append(item)
    return out
