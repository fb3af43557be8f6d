"""Which Redis the tests run against: one server (the default) or a Redis Cluster of three
masters with a replica each (`FSTORE_TEST_REDIS=cluster`), and the clients tests use to look at
it whichever it is.

With the cluster target, `FSTORE_REDIS_CLUSTER=true` is set for the whole session, so every
`RedisSettings` a test or a process it starts builds talks cluster.
"""

from __future__ import annotations

import os

import redis as redis_lib

from featurestore.config import RedisSettings
from featurestore.redis_client import make_client

__all__ = ["CLUSTER", "client_of", "delete_matching"]

CLUSTER = os.environ.get("FSTORE_TEST_REDIS", "").strip().lower() == "cluster"


def client_of(url: str) -> redis_lib.Redis:
    """A client of the test Redis at `url`: a cluster client on the cluster target."""
    return make_client(RedisSettings(url=url))


def delete_matching(client: redis_lib.Redis, pattern: str) -> int:
    """Delete the keys matching a SCAN pattern (on every node of a cluster), one slot at a
    time; how many there were."""
    keys = list(client.scan_iter(match=pattern, count=1000))
    if not keys:
        return 0
    if CLUSTER:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.delete(key)
        pipe.execute()
    else:
        client.delete(*keys)
    return len(keys)
