"""`fstore demo`: bring the services up when none answer, then run the smoke pipeline.

This grows into the end-to-end demo (features, training, serving, drift) in later releases.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import redis
import typer
from rich.console import Console
from rich.table import Table

from featurestore.config import Settings, load_settings
from featurestore.errors import FeatureStoreError
from featurestore.services import KafkaServer, RedisServer, broker_answers
from streaming.smoke import consume_into_redis, make_events, produce, read_back
from streaming.topics import ensure_topic

console = Console()


def demo(
    events: Annotated[int, typer.Option(help="How many events to publish.")] = 10_000,
    keep_running: Annotated[
        bool, typer.Option(help="Leave services the demo started running afterwards.")
    ] = False,
) -> None:
    """Run the pipeline end to end on real Kafka and Redis and check every value."""
    settings = load_settings()
    started = _ensure_services(settings)
    try:
        _run(settings, events)
    finally:
        if started and not keep_running:
            for server in started:
                server.stop()
            console.print(
                "Stopped the services the demo started (use --keep-running to keep them)."
            )


def _ensure_services(settings: Settings) -> list[KafkaServer | RedisServer]:
    """Use the configured Kafka/Redis when they answer; else start local ones and use those."""
    started: list[KafkaServer | RedisServer] = []
    if broker_answers(settings.kafka.bootstrap, settings.kafka.properties):
        console.print(f"Using the Kafka broker at {settings.kafka.bootstrap}")
    else:
        kafka = KafkaServer(settings.services)
        console.print(
            f"No Kafka broker answers at {settings.kafka.bootstrap}; starting a local one."
        )
        with console.status(f"Starting Kafka {kafka.version} (first run downloads its jars)..."):
            if kafka.start():
                started.append(kafka)
        settings.kafka.bootstrap = kafka.bootstrap
        settings.kafka.properties = {}
        console.print(f"Kafka {kafka.version} runs at {kafka.bootstrap}")
    if _redis_answers(settings.redis.url):
        console.print(f"Using Redis at {settings.redis.url}")
    else:
        server = RedisServer(settings.services)
        console.print(f"No Redis answers at {settings.redis.url}; starting a local one.")
        if server.start():
            started.append(server)
        settings.redis.url = server.url
        console.print(f"Redis runs at {server.url}")
    return started


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _run(settings: Settings, count: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    topic, prefix = f"demo.events.{run_id}", f"demo:{run_id}:"
    client = redis.Redis.from_url(settings.redis.url)
    events = make_events(count, seed=42)
    ensure_topic(settings.kafka, topic, partitions=3)

    began = time.perf_counter()
    with console.status(f"Publishing {count:,} events to {topic}..."):
        produce(settings.kafka, topic, events)
    produced_at = time.perf_counter()
    with console.status("Consuming them into Redis..."):
        consumed = consume_into_redis(
            settings.kafka, client, topic, f"demo-{run_id}", prefix, expected=count
        )
    consumed_at = time.perf_counter()
    stored = read_back(client, prefix, count)
    wrong = sum(1 for want, got in zip(events, stored, strict=True) if want != got)
    client.delete(*[f"{prefix}event:{i}" for i in range(count)])

    table = Table("step", "result")
    table.add_row("published", f"{count:,} events in {produced_at - began:.2f}s")
    table.add_row("consumed into Redis", f"{consumed:,} events in {consumed_at - produced_at:.2f}s")
    table.add_row("read back and compared", f"{count - wrong:,} equal, {wrong:,} different")
    console.print(table)
    if wrong or consumed != count:
        raise FeatureStoreError(f"smoke pipeline lost or changed {wrong} of {count} events")
    console.print(
        "[bold green]Smoke pipeline OK[/]: every event arrived in Redis exactly as published."
    )
