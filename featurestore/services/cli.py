"""`fstore services up|down|status|build`: the local servers for development, the demo and the
tests — Kafka and Redis always, a Redis Cluster instead of the one Redis, PostgreSQL and the S3
server (SeaweedFS) on request."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from featurestore.config import ServicesSettings, load_settings
from featurestore.services.kafka import KafkaServer, KafkaStatus
from featurestore.services.postgres import PostgresServer, PostgresStatus
from featurestore.services.redis import RedisServer, RedisStatus
from featurestore.services.redis_cluster import RedisCluster
from featurestore.services.seaweedfs import S3Server, S3Status

__all__ = ["services_app"]

services_app = typer.Typer(
    help="Run local Kafka, Redis (or a Redis Cluster), PostgreSQL and S3 servers (no Docker)."
)
console = Console()


@services_app.command("up")
def services_up(
    redis_cluster: Annotated[
        int,
        typer.Option(
            help="Start a Redis Cluster of this many masters (>= 3) instead of one Redis, on "
            "ports from services.redis_port; then set redis.cluster: true "
            "(FSTORE_REDIS_CLUSTER=true)."
        ),
    ] = 0,
    replicas: Annotated[
        int, typer.Option(help="With --redis-cluster: a replica per master (0 or 1).")
    ] = 0,
    postgres: Annotated[
        bool,
        typer.Option("--postgres", help="Also start PostgreSQL (Debian's), for `registry.url`."),
    ] = False,
    s3: Annotated[
        bool,
        typer.Option(
            "--s3",
            help="Also start SeaweedFS, an S3 server for an s3:// offline root "
            "(built from the Go module proxy on first use: minutes).",
        ),
    ] = False,
) -> None:
    """Start a local Kafka broker (KRaft) and Redis; reuse them when already running."""
    config = load_settings().services
    if postgres:
        _postgres_up(PostgresServer(config))
    if s3:
        _s3_up(config)
    kafka = KafkaServer(config)
    with console.status(f"Starting Kafka {kafka.version} (first run downloads its jars)..."):
        started = kafka.start()
    console.print(
        f"Kafka {kafka.version} {'started' if started else 'already running'} at {kafka.bootstrap}"
    )
    if redis_cluster:
        _cluster_up(config, redis_cluster, replicas)
        return
    redis = RedisServer(config)
    with console.status("Starting Redis..."):
        started = redis.start()
    console.print(f"Redis {'started' if started else 'already running'} at {redis.url}")


def _cluster_up(config: ServicesSettings, masters: int, replicas: int) -> None:
    cluster = RedisCluster(config.state_dir, config.redis_port, masters, replicas)
    with console.status(f"Starting a Redis Cluster of {masters} masters..."):
        started = cluster.start()
    console.print(
        f"Redis Cluster ({masters} masters, {replicas} replica each) "
        f"{'started' if started else 'already running'} at {cluster.url}; set "
        "FSTORE_REDIS_CLUSTER=true"
    )


def _postgres_up(server: PostgresServer) -> None:
    with console.status("Starting PostgreSQL (the first run creates its cluster)..."):
        started = server.start()
    console.print(
        f"PostgreSQL {'started' if started else 'already running'} at {server.shown_url}; "
        f"its password is in {server.password_file}: set FSTORE_REGISTRY_URL to the URL with it"
    )


def _s3_up(config: ServicesSettings) -> None:
    server = S3Server(config)
    if not server.binary.exists():
        with console.status("Building SeaweedFS from the Go module proxy (once, minutes)..."):
            server.ensure_binary()
    with console.status("Starting SeaweedFS (S3)..."):
        started = server.start()
    console.print(
        f"SeaweedFS S3 {'started' if started else 'already running'} at {server.endpoint}; "
        f"its access key and secret are in {server.credentials_file}: set offline.root: "
        f"s3://BUCKET/PREFIX, offline.s3_endpoint: {server.endpoint}, offline.s3_access_key "
        "and offline.s3_secret_key (or FSTORE_OFFLINE_S3_*)"
    )


def _local_cluster(config: ServicesSettings) -> RedisCluster | None:
    """The local cluster `services up --redis-cluster` created under the state dir, if any."""
    home = config.state_dir / "redis-cluster"
    ports = sorted(int(p.name) for p in home.glob("*") if p.is_dir() and p.name.isdigit())
    if not ports:
        return None
    masters = len(ports)
    replicas = 0
    if masters >= 6 and masters % 2 == 0:
        masters, replicas = masters // 2, 1
    return RedisCluster(config.state_dir, ports[0], masters, replicas)


@services_app.command("down")
def services_down() -> None:
    """Stop the servers that `fstore services up` started (found by pid file only)."""
    config = load_settings().services
    cluster = _local_cluster(config)
    if cluster is not None and cluster.stop():
        console.print("Redis Cluster stopped")
    servers = (
        ("PostgreSQL", PostgresServer(config)),
        ("SeaweedFS", S3Server(config)),
        ("Redis", RedisServer(config)),
        ("Kafka", KafkaServer(config)),
    )
    for name, server in servers:
        if name in ("PostgreSQL", "SeaweedFS") and server.process.pid() is None:
            continue  # started only on request (`up --postgres/--s3`): no line when never run
        with console.status(f"Stopping {name}..."):
            stopped = server.stop()
        console.print(f"{name} {'stopped' if stopped else 'was not running'}")


@services_app.command("status")
def services_status() -> None:
    """Show what runs where."""
    config = load_settings().services
    kafka, redis = KafkaServer(config).status(), RedisServer(config).status()
    s3 = S3Server(config).status()
    table = Table("service", "state", "pid", "address", "version", "data", "log")
    rows: list[tuple[str, KafkaStatus | RedisStatus | PostgresStatus | S3Status, str, str]] = [
        ("kafka", kafka, kafka.bootstrap, kafka.version),
        ("redis", redis, redis.url, redis.version or "?"),
        ("s3 (seaweedfs)", s3, s3.endpoint, s3.version),
    ]
    postgres = PostgresServer(config).status()
    if postgres.data_dir.exists():  # a row once `up --postgres` made its cluster
        rows.append(("postgres", postgres, postgres.url, postgres.version or "?"))
    for name, status, address, version in rows:
        state = "[green]running[/]" if status.running else "[red]stopped[/]"
        pid = str(status.pid) if status.pid else "-"
        table.add_row(
            name, state, pid, address, version, str(status.data_dir), str(status.log_file)
        )
    cluster = _local_cluster(config)
    if cluster is not None:
        for node, node_pid in zip(cluster.nodes, cluster.running(), strict=True):
            state = "[green]running[/]" if node_pid else "[red]stopped[/]"
            table.add_row(
                f"redis-cluster {node.port}",
                state,
                str(node_pid or "-"),
                node.url,
                redis.version or "?",
                str(node.home),
                str(node.log_file),
            )
    console.print(table)


@services_app.command("build")
def services_build() -> None:
    """Build the local S3 server (SeaweedFS) from the Go module proxy now, once: CI runs it
    before the tests so that no test waits minutes for it."""
    server = S3Server(load_settings().services)
    if server.binary.exists():
        console.print(f"SeaweedFS {server.version}: {server.binary} (cached)")
        return
    began = time.monotonic()
    with console.status("Building SeaweedFS from the Go module proxy (once, minutes)..."):
        binary = server.ensure_binary()
    console.print(f"SeaweedFS {server.version}: built {binary} in {time.monotonic() - began:.0f}s")
