"""A local Redis Cluster: N masters (and a replica each, if asked) of Debian's `redis-server` in
cluster mode on loopback, joined by `redis-cli --cluster create`.

Node i listens on `base_port + i`; masters are nodes 0..N-1, their replicas N..2N-1 (the
`--cluster-replicas 1` order of `redis-cli`). Each node has its folder, config, AOF and
`nodes.conf` under `<state_dir>/redis-cluster/<port>`, and its pid file there, so `stop` and
`status` find exactly the processes started here.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess  # noqa: S404 - running redis-server and redis-cli is this module's job
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from featurestore.errors import ServiceError
from featurestore.services.process import ManagedProcess, ensure_port_free, wait_until
from featurestore.services.redis import HOST, redis_server_binary

__all__ = ["ClusterNode", "RedisCluster", "free_ports"]


@dataclass(frozen=True)
class ClusterNode:
    port: int
    home: Path
    process: ManagedProcess
    log_file: Path

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


class RedisCluster:
    """`masters` masters with `replicas` replicas each (0 or 1), ports from `base_port`."""

    def __init__(self, state_dir: Path, base_port: int, masters: int = 3, replicas: int = 0):
        if masters < 3:
            raise ServiceError(f"a Redis Cluster needs at least 3 masters, not {masters}")
        if replicas not in (0, 1):
            raise ServiceError(f"--replicas takes 0 or 1, not {replicas}")
        self.home = state_dir / "redis-cluster"
        self.base_port = base_port
        self.masters = masters
        self.replicas = replicas
        self.nodes = [self._node(base_port + i) for i in range(masters * (1 + replicas))]

    def _node(self, port: int) -> ClusterNode:
        home = self.home / str(port)
        config = home / "redis.conf"
        return ClusterNode(
            port,
            home,
            ManagedProcess(f"redis-{port}", home / "redis.pid", str(config)),
            home / "redis.log",
        )

    @property
    def url(self) -> str:
        """A URL of the cluster (its first node: a cluster client finds the others)."""
        return self.nodes[0].url

    def running(self) -> list[int | None]:
        return [node.process.pid() for node in self.nodes]

    def start(self, timeout: float = 60.0) -> bool:
        """Start every node and create the cluster; False when all were running already."""
        if all(pid is not None for pid in self.running()):
            return False
        binary = redis_server_binary()
        created = (self.home / "created").exists()
        for node in self.nodes:
            if node.process.pid() is not None:
                continue
            ensure_port_free("Redis", HOST, node.port)
            node.home.mkdir(parents=True, exist_ok=True)
            # As the single server (services/redis.py): AOF every second, no RDB forks.
            (node.home / "redis.conf").write_text(
                f"bind {HOST}\n"
                f"port {node.port}\n"
                f"dir {node.home}\n"
                "daemonize no\n"
                "protected-mode yes\n"
                'save ""\n'
                "appendonly yes\n"
                "appendfsync everysec\n"
                "cluster-enabled yes\n"
                "cluster-config-file nodes.conf\n"
                "cluster-node-timeout 2000\n"
                # A replica takes over however long it was cut off from its master: whatever
                # it lacks, the writers find and rebuild from the offline log
                # (featurestore/writer.py), rather than a slot range staying down.
                "cluster-replica-validity-factor 0\n"
                "loglevel notice\n"
                "set-proc-title no\n"
            )
            proc = node.process.start(
                [binary, str(node.home / "redis.conf")], node.log_file, cwd=node.home
            )
            wait_until(partial(_pings, node.port), timeout, "redis-server", node.log_file, proc)
        if not created:
            self._create(timeout)
            (self.home / "created").write_text("yes\n")
        deadline = time.monotonic() + timeout
        while not self._ok():
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"the Redis Cluster at {self.url} did not say cluster_state:ok within "
                    f"{timeout:.0f}s; see the logs under {self.home}"
                )
            time.sleep(0.2)
        return True

    def _create(self, timeout: float) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ServiceError("redis-cli was not found on PATH (Debian package redis-tools)")
        argv = [cli, "--cluster", "create", *(f"{HOST}:{n.port}" for n in self.nodes)]
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        result = subprocess.run(  # noqa: S603 - argv built here
            argv, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise ServiceError(
                f"`redis-cli --cluster create` exited {result.returncode}:\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def _ok(self) -> bool:
        """Every node says cluster_state:ok, and every replica is in sync with its master (a
        replica still syncing could not take over)."""
        return all(_cluster_ok(node.port) for node in self.nodes) and all(
            _replica_linked(node.port) for node in self.nodes[self.masters :]
        )

    def stop(self) -> bool:
        """Stop every node; True when any was running. The data stays (a restart keeps it)."""
        stopped = [node.process.stop() for node in self.nodes]
        return any(stopped)


def free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports whose cluster bus ports (10,000
    higher) are free too, below 55,536 as Redis Cluster requires."""
    for _ in range(200):
        base = random.randint(20_000, 45_000)  # noqa: S311 - not for security
        wanted = [base + i for i in range(count)] + [base + 10_000 + i for i in range(count)]
        if all(_port_free(port) for port in wanted):
            return base
    raise ServiceError(f"found no {count} consecutive free ports for a Redis Cluster")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _pings(port: int) -> bool:
    import redis  # the CLI starts without loading redis-py

    client = redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _replica_linked(port: int) -> bool:
    import redis

    client = redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        info = client.info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"
    except redis.RedisError:
        return False
    finally:
        client.close()


def _cluster_ok(port: int) -> bool:
    import redis

    client = redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text
    except redis.RedisError:
        return False
    finally:
        client.close()
