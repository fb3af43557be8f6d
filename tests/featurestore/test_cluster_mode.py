"""A process refuses a Redis whose cluster mode is not the one `redis.cluster` says, at start
(`check_eviction_policy` runs the check): half-working (the keys one node holds) is worse than
a clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis as redis_module

from featurestore.config import RedisSettings
from featurestore.errors import ConfigError, RedisUnavailable
from featurestore.online import OnlineStore
from featurestore.redis_client import check_cluster_mode, check_eviction_policy
from featurestore.services.redis_cluster import RedisCluster, free_ports
from tests.redis_target import CLUSTER

pytestmark = pytest.mark.integration


def test_the_cluster_mode_must_match_the_server(redis: str) -> None:
    assert check_cluster_mode(RedisSettings(url=redis, cluster=CLUSTER)) is CLUSTER
    wrong = RedisSettings(url=redis, cluster=not CLUSTER)
    for check in (check_cluster_mode, check_eviction_policy):
        with pytest.raises(ConfigError, match=f"set redis.cluster: {str(CLUSTER).lower()}"):
            check(wrong)


def test_a_store_made_while_the_cluster_is_down_waits_for_it(tmp_path: Path) -> None:
    """redis-py reads the slot map when it builds a cluster client; ours builds it on first use,
    so a process starts while the cluster is down, each call fails as an unreachable Redis does
    (a worker waits, a request gets a 503), and the same store works once the cluster is up."""
    cluster = RedisCluster(tmp_path, free_ports(3), masters=3)
    settings = RedisSettings(url=cluster.url, cluster=True, namespace="down")
    store = OnlineStore(settings)  # no server yet: builds nothing
    try:
        with pytest.raises(RedisUnavailable, match=re.escape(cluster.url)):
            store.positions("v", 1)
        cluster.start()
        assert store.positions("v", 1) == {}
        # Every node is checked for an evicting policy, not just the one the client asks first.
        last = cluster.nodes[-1]
        redis_module.Redis(port=last.port).config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(ConfigError, match=f"Redis at 127.0.0.1:{last.port} has maxmemory"):
            check_eviction_policy(settings)
        accepted = settings.model_copy(update={"allow_eviction": True})
        assert check_eviction_policy(accepted) == "allkeys-lru"
    finally:
        store.close()
        cluster.stop()
