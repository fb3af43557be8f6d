"""A Redis Cluster master killed (-9) while a writer applies batches: its replica takes over,
the writer waits the outage out, finds what the replica lacked (replication is asynchronous)
through the state-loss rules (featurestore/writer.py), and the values equal the brute-force
reference over every event once. Runs with the cluster target (FSTORE_TEST_REDIS=cluster) on
a cluster of its own: three masters with a replica each."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from featurestore.config import OfflineSettings, RedisSettings
from featurestore.offline.log import OfflineStore
from featurestore.online import OnlineStore
from featurestore.services.redis_cluster import RedisCluster, free_ports
from featurestore.writer import ViewWriter
from tests.featurestore.test_state_loss import VIEW, assert_reference, random_batches
from tests.redis_target import CLUSTER

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CLUSTER, reason="the cluster target (FSTORE_TEST_REDIS=cluster)"),
]


def test_a_master_killed_during_ingest_fails_over_and_the_values_equal_the_reference(
    tmp_path: Path,
) -> None:
    cluster = RedisCluster(tmp_path / "services", free_ports(6), masters=3, replicas=1)
    cluster.start()
    try:
        settings = RedisSettings(
            url=cluster.url, namespace=f"test:{uuid.uuid4().hex[:8]}", cluster=True, shards=16
        )
        online = OnlineStore(settings)
        offline = OfflineStore(OfflineSettings(root=tmp_path / "log"))
        events, batches = random_batches(7, [60] * 10)
        writer = ViewWriter(online, offline, VIEW, 1)
        writer.load_positions()
        for i, batch in enumerate(batches):
            if i == 5:
                # The master holding shard 0 dies; its replica is promoted after
                # cluster-node-timeout (2 s) and the writer's next call waits until then.
                host_port = online.client.get_node_from_key(  # type: ignore[attr-defined]
                    online.shard_prefix(VIEW.name, 1, 0) + ":_pos"
                ).port
                [node] = [n for n in cluster.nodes if n.port == host_port]
                pid = node.process.pid()
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
            writer.apply(batch, batch.last_offsets())
        assert_reference(online, events)
        assert online.positions(VIEW.name, 1) == {p: at for p, at in writer.positions.items()}
        online.close()
    finally:
        cluster.stop()
