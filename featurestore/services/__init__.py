"""Local Kafka and Redis servers for development, the demo and the tests (`fstore services`)."""

from __future__ import annotations

from featurestore.services.kafka import KafkaSecurity, KafkaServer, KafkaStatus, broker_answers
from featurestore.services.process import free_port
from featurestore.services.redis import RedisSecurity, RedisServer, RedisStatus

__all__ = [
    "KafkaSecurity",
    "KafkaServer",
    "KafkaStatus",
    "RedisSecurity",
    "RedisServer",
    "RedisStatus",
    "broker_answers",
    "free_port",
]
