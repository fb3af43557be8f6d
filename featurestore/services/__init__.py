"""Local Kafka, Redis, PostgreSQL and S3 (SeaweedFS) servers for development, the demo and the tests
(`fstore services`)."""

from __future__ import annotations

from featurestore.services.kafka import KafkaSecurity, KafkaServer, KafkaStatus, broker_answers
from featurestore.services.postgres import PostgresServer, PostgresStatus
from featurestore.services.process import free_port
from featurestore.services.redis import RedisSecurity, RedisServer, RedisStatus
from featurestore.services.seaweedfs import S3Credentials, S3Server, S3Status

__all__ = [
    "KafkaSecurity",
    "KafkaServer",
    "KafkaStatus",
    "PostgresServer",
    "PostgresStatus",
    "RedisSecurity",
    "RedisServer",
    "RedisStatus",
    "S3Credentials",
    "S3Server",
    "S3Status",
    "broker_answers",
    "free_port",
]
