"""Local Kafka, Redis and PostgreSQL servers for development, the demo and the tests
(`fstore services`)."""

from __future__ import annotations

from featurestore.services.kafka import KafkaServer, KafkaStatus, broker_answers
from featurestore.services.postgres import PostgresServer, PostgresStatus
from featurestore.services.process import free_port
from featurestore.services.redis import RedisServer, RedisStatus

__all__ = [
    "KafkaServer",
    "KafkaStatus",
    "PostgresServer",
    "PostgresStatus",
    "RedisServer",
    "RedisStatus",
    "broker_answers",
    "free_port",
]
