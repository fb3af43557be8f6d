"""Step 1: the configured Kafka and Redis when they answer, else local ones (`fstore services`).

What the demo started it stops at the end (unless asked to keep it running); what was already
running it leaves alone.
"""

from __future__ import annotations

from rich.console import Console

from featurestore.config import Settings
from featurestore.redis_client import answers
from featurestore.services import KafkaServer, RedisServer, broker_answers

__all__ = ["Started", "ensure_services"]

Started = list[KafkaServer | RedisServer]


def ensure_services(settings: Settings, console: Console) -> Started:
    """Point `settings` at answering servers, starting local ones where none answer."""
    started: Started = []
    if broker_answers(settings.kafka.bootstrap, settings.kafka.properties):
        console.print(f"Using the Kafka broker at {settings.kafka.bootstrap}")
    else:
        kafka = KafkaServer(settings.services)
        console.print(f"No Kafka broker answers at {settings.kafka.bootstrap}: starting one.")
        with console.status(f"Starting Kafka {kafka.version} (the first run downloads its jars)"):
            if kafka.start():
                started.append(kafka)
        settings.kafka.bootstrap = kafka.bootstrap
        settings.kafka.properties = {}
        console.print(f"Kafka {kafka.version} runs at {kafka.bootstrap}")
    if answers(settings.redis):
        console.print(f"Using Redis at {settings.redis.shown_url}")
    else:
        server = RedisServer(settings.services)
        console.print(f"No Redis answers at {settings.redis.shown_url}: starting one.")
        with console.status("Starting Redis"):
            if server.start():
                started.append(server)
        settings.redis.url = server.url
        console.print(f"Redis runs at {server.url}")
    return started
