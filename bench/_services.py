"""Kafka and Redis for a benchmark run (started here, or borrowed from FSTORE_KAFKA_BOOTSTRAP /
FSTORE_REDIS_URL), what they used, and what the run leaves in them: topics, Redis keys, the
feature registry's views.

Kafka and Redis clients are imported in the functions that use them: measured subprocesses
import this module's neighbours, and their peak RSS should hold what they measure, not
librdkafka.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _machine import tree_cpu_seconds
from _report import log

from featurestore.config import (
    KafkaSettings,
    ModelsSettings,
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    ServicesSettings,
    Settings,
)

if TYPE_CHECKING:
    import redis

    from featurestore.definitions import FeatureView
    from featurestore.services import KafkaServer, RedisServer

__all__ = [
    "Services",
    "cleanup_services",
    "delete_keys",
    "register_views",
    "run_settings",
    "server_cpu",
    "services_versions",
    "start_services",
]


@dataclass
class Services:
    kafka: KafkaSettings
    redis_url: str
    kafka_version: str
    started: list[KafkaServer | RedisServer]


def start_services(
    state_dir: Path, properties: dict[str, str] | None = None, borrow: bool = True
) -> Services:
    """Kafka and Redis on free ports in `state_dir`, unless FSTORE_KAFKA_BOOTSTRAP /
    FSTORE_REDIS_URL name running ones (which are then borrowed, never stopped). Without
    `borrow`, always servers of the run's own (a run that restarts or wipes them)."""
    from featurestore.services import KafkaServer, RedisServer, free_port

    config = ServicesSettings(
        state_dir=state_dir,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        redis_port=free_port(),
    )
    started: list[KafkaServer | RedisServer] = []
    bootstrap = os.environ.get("FSTORE_KAFKA_BOOTSTRAP") if borrow else None
    url = os.environ.get("FSTORE_REDIS_URL") if borrow else None
    version = "external"
    try:
        if not bootstrap:
            kafka = KafkaServer(config)
            log(f"starting Kafka {kafka.version} on {kafka.bootstrap}")
            started.append(kafka)
            kafka.start()
            bootstrap, version = kafka.bootstrap, kafka.version
        if not url:
            server = RedisServer(config)
            log(f"starting Redis on {server.url}")
            started.append(server)
            server.start()
            url = server.url
    except BaseException:
        for one in started:
            one.stop()
        raise
    return Services(
        KafkaSettings(bootstrap=bootstrap, properties=properties or {}), url, version, started
    )


def server_cpu(services: Services) -> dict[str, float | None]:
    """CPU seconds used so far by Redis (its INFO) and by a broker this run started."""
    import redis

    from featurestore.services import KafkaServer

    info = redis.Redis.from_url(services.redis_url).info("cpu")
    out: dict[str, float | None] = {
        "redis": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "kafka": None,
    }
    for server in services.started:
        pid = server.process.pid() if isinstance(server, KafkaServer) else None
        if pid is not None:
            out["kafka"] = tree_cpu_seconds(pid)
    return out


def services_versions(services: Services) -> dict[str, Any]:
    import redis
    from confluent_kafka import libversion
    from confluent_kafka import version as kafka_client_version

    redis_info = redis.Redis.from_url(services.redis_url).info("server")
    return {
        "kafka": services.kafka_version,
        "redis": redis_info.get("redis_version"),
        "confluent_kafka": kafka_client_version(),
        "librdkafka": libversion()[0],
    }


def cleanup_services(services: Services, topics: list[str], namespaces: list[str]) -> None:
    """Stop the servers this run started; on borrowed ones, delete what the run made (topics
    with their dead-letter topics, and the keys under each Redis namespace)."""
    import redis
    from confluent_kafka.admin import AdminClient

    from featurestore.services import KafkaServer, RedisServer

    ours = {type(server) for server in services.started}
    if KafkaServer not in ours and topics:
        admin = AdminClient(services.kafka.client_config())
        names = topics + [f"{t}.dlq" for t in topics]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception as exc:  # noqa: BLE001 - best effort: a dlq topic may not exist
                log(f"could not delete a topic: {exc}")
    if RedisServer not in ours:
        client = redis.Redis.from_url(services.redis_url)
        for namespace in namespaces:
            delete_keys(client, f"{namespace}:*")
    for server in services.started:
        server.stop()


def delete_keys(client: redis.Redis, match: str) -> int:
    """Delete the keys matching `match` (a SCAN pattern), 10,000 a call; how many there were."""
    keys = list(client.scan_iter(match=match, count=10_000))
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i : i + 10_000])
    return len(keys)


def register_views(config: RegistrySettings, *views: FeatureView) -> None:
    """Apply the views (with their entities and sources) to the feature registry at `config`."""
    from featurestore.registry import Registry
    from featurestore.repo import RepoContents

    Registry(config).apply(
        RepoContents(
            entities={e.name: e for v in views for e in v.entities},
            sources={v.source.name: v.source for v in views},
            views={v.name: v for v in views},
        )
    )


def run_settings(services: Services, work: Path, namespace: str, **sections: Any) -> Settings:
    """The product's settings for a run: its Kafka, its Redis with keys under `namespace`, and
    the offline log, registry and models in `work`; `sections` add or replace sections
    (serving, monitor, another offline root)."""
    defaults: dict[str, Any] = {
        "kafka": services.kafka,
        "redis": RedisSettings(url=services.redis_url, namespace=namespace),
        "offline": OfflineSettings(root=work / "offline"),
        "registry": RegistrySettings(path=work / "registry"),
        "models": ModelsSettings(path=work / "models"),
    }
    return Settings(**{**defaults, **sections})
