"""Where a demo run keeps its things, away from the user's own: a folder (registry, offline log,
models, logs, a `featurestore.yaml`), Kafka topics and a Redis namespace named for the run.

Every run gets new topics and a new namespace, so a second run on the same broker never reads
the first one's events, and a folder is only ever wiped when a marker file says the demo made it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import orjson
import yaml

from demo.errors import DemoError
from demo.topics import delete_topics
from featurestore.config import (
    CONFIG_PATH_ENV,
    ModelsSettings,
    MonitorSettings,
    OfflineSettings,
    RedisSettings,
    RegistrySettings,
    ServingSettings,
    Settings,
)
from featurestore.redis_client import STORE, make_client, redis_errors

__all__ = ["MARKER", "Topics", "Workspace"]

MARKER = ".fstore-demo"
_ENV_PREFIX = "FSTORE_"


@dataclass(frozen=True)
class Topics:
    """The run's topics; all start with `prefix`, so the run can delete them afterwards."""

    prefix: str

    @property
    def transactions(self) -> str:
        return f"{self.prefix}transactions"

    @property
    def labels(self) -> str:
        return f"{self.prefix}labels"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}predictions"

    @property
    def drift(self) -> str:
        return f"{self.prefix}drift"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"


@dataclass(frozen=True)
class Workspace:
    root: Path
    run: str
    topics: Topics
    settings: Settings  # the demo's: the user's Kafka and Redis, everything else its own

    @classmethod
    def create(
        cls, root: Path, base: Settings, monitor: MonitorSettings, port: int, host: str
    ) -> Workspace:
        """Make (or wipe and remake) the demo folder and the run's settings."""
        root = root.expanduser().resolve()
        _claim(root)
        run = uuid.uuid4().hex[:8]
        topics = Topics(f"fstore-demo.{run}.")
        settings = base.model_copy(
            update={
                "redis": RedisSettings(url=base.redis.url, namespace=f"fstore-demo-{run}"),
                "offline": OfflineSettings(root=root / "offline"),
                "registry": RegistrySettings(path=root / "registry"),
                "models": ModelsSettings(path=root / "models"),
                "serving": ServingSettings(
                    host=host, port=port, prediction_log_topic=topics.predictions
                ),
                "monitor": monitor.model_copy(
                    update={
                        "drift_topic": topics.drift,
                        "alerts_topic": topics.alerts,
                        "labels_topic": topics.labels,
                    }
                ),
            }
        )
        workspace = cls(root, run, topics, settings)
        workspace.logs.mkdir(parents=True, exist_ok=True)
        workspace._write_config()
        return workspace

    @property
    def config_file(self) -> Path:
        return self.root / "featurestore.yaml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the `fstore` processes the demo starts: the demo's config file,
        and the endpoints (with any credentials) through variables rather than on disk. The
        user's other FSTORE_* variables are dropped: they must not point the demo elsewhere."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIX)}
        kafka, redis = self.settings.kafka, self.settings.redis
        env.update(
            {
                CONFIG_PATH_ENV: str(self.config_file),
                "FSTORE_KAFKA_BOOTSTRAP": kafka.bootstrap,
                "FSTORE_KAFKA_PROPERTIES": orjson.dumps(kafka.properties).decode(),
                "FSTORE_REDIS_URL": redis.url,
                "PYTHONUNBUFFERED": "1",
                **extra,
            }
        )
        return env

    def remove_run_data(self) -> list[str]:
        """Delete the run's topics and Redis keys (the folder stays, for a look afterwards)."""
        deleted = delete_topics(self.settings.kafka, self.topics.prefix)
        client = make_client(self.settings.redis, STORE)
        batch: list[bytes] = []
        try:
            with redis_errors(self.settings.redis, "deleting the run's keys"):
                for key in client.scan_iter(match=f"{self.settings.redis.namespace}:*", count=1000):
                    batch.append(key)
                    if len(batch) == 1000:
                        client.delete(*batch)
                        batch.clear()
                if batch:
                    client.delete(*batch)
        finally:
            client.close()
        return deleted

    def _write_config(self) -> None:
        """`featurestore.yaml` of the run, so `FSTORE_CONFIG=<it> fstore ...` explores it."""
        settings = self.settings
        redis: dict[str, str] = {"namespace": settings.redis.namespace}
        if urlparse(settings.redis.url).password is None:  # no secret written to disk
            redis["url"] = settings.redis.url
        data = {
            "kafka": {"bootstrap": settings.kafka.bootstrap},
            "redis": redis,
            "offline": {"root": str(settings.offline.root)},
            "registry": {"path": str(settings.registry.path)},
            "models": {"path": str(settings.models.path)},
            "serving": settings.serving.model_dump(
                mode="json", exclude={"admin_token", "read_token"}
            ),
            "monitor": settings.monitor.model_dump(mode="json"),
        }
        header = (
            f"# Written by `fstore demo` (run {self.run}). Kafka security properties and a Redis\n"
            "# password, if any, are not stored here: they come from your own configuration.\n"
        )
        self.config_file.write_text(header + yaml.safe_dump(data, sort_keys=False))


def _claim(root: Path) -> None:
    """Wipe a folder an earlier demo made; refuse any other folder that holds something."""
    if root.exists():
        if not root.is_dir():
            raise DemoError(f"{root} is a file", "pass another --data-dir")
        if (root / MARKER).exists():
            shutil.rmtree(root)
        elif any(root.iterdir()):
            raise DemoError(
                f"{root} holds files the demo did not make, and the demo never touches your data",
                "pass an empty or new folder with --data-dir",
            )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by `fstore demo`; the next run deletes this folder\n")
