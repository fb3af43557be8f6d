"""A process refuses a Redis whose cluster mode is not the one `redis.cluster` says, at start
(`check_eviction_policy` runs the check): half-working (the keys one node holds) is worse than
a clear error."""

from __future__ import annotations

import pytest

from featurestore.config import RedisSettings
from featurestore.errors import ConfigError
from featurestore.redis_client import check_cluster_mode, check_eviction_policy
from tests.redis_target import CLUSTER

pytestmark = pytest.mark.integration


def test_the_cluster_mode_must_match_the_server(redis: str) -> None:
    assert check_cluster_mode(RedisSettings(url=redis, cluster=CLUSTER)) is CLUSTER
    wrong = RedisSettings(url=redis, cluster=not CLUSTER)
    for check in (check_cluster_mode, check_eviction_policy):
        with pytest.raises(ConfigError, match=f"set redis.cluster: {str(CLUSTER).lower()}"):
            check(wrong)
