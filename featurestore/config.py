"""One settings object for every part of the system.

Values come, highest priority first, from keyword arguments, `FSTORE_*` environment variables,
the YAML file (`featurestore.yaml` in the working directory, or the path in `FSTORE_CONFIG`),
then the defaults below. Environment names follow the YAML nesting with one underscore after the
section: `FSTORE_KAFKA_BOOTSTRAP`, `FSTORE_REDIS_URL`, `FSTORE_SERVICES_KAFKA_PORT`; dicts are
JSON, e.g. `FSTORE_KAFKA_PROPERTIES='{"security.protocol": "SASL_SSL"}'`.

>>> Settings(kafka={"bootstrap": "broker:9092"}).kafka.bootstrap
'broker:9092'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote_plus, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from featurestore.definitions import duration_us
from featurestore.errors import ConfigError

__all__ = [
    "CONFIG_FILE_NAME",
    "CONFIG_PATH_ENV",
    "DriftThresholds",
    "KafkaSettings",
    "ModelsSettings",
    "MonitorSettings",
    "OfflineSettings",
    "RedisSettings",
    "RegistrySettings",
    "SECRET_SHOWN",
    "ServicesSettings",
    "ServingSettings",
    "Settings",
    "UserPath",
    "WatchSettings",
    "config_path",
    "is_secret_name",
    "load_settings",
    "masked",
    "url_without_password",
]

CONFIG_FILE_NAME = "featurestore.yaml"
CONFIG_PATH_ENV = "FSTORE_CONFIG"


# A path that may start with `~`.
UserPath = Annotated[Path, AfterValidator(lambda path: path.expanduser())]


def _state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "fstore"


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fstore"


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    # Any librdkafka property (security.protocol, sasl.*, ssl.*, ...), passed to every client.
    properties: dict[str, str] = Field(default_factory=dict)

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration for a producer, consumer or admin client."""
        return {"bootstrap.servers": self.bootstrap, **self.properties, **extra}


class RedisSettings(BaseModel):
    # redis://, rediss:// (TLS) or unix:// URL.
    url: str = "redis://127.0.0.1:6379/0"
    # Prefix of every key the feature store writes, so several stores can share one Redis.
    namespace: str = "fs"
    # Accept a server whose maxmemory-policy evicts keys (allkeys-*, volatile-*): an evicted tile
    # silently loses window history, so processes refuse to start on one unless this is true
    # (`featurestore.redis_client.check_eviction_policy`).
    allow_eviction: bool = False
    # The URL names one node of a Redis Cluster (any: the others are found from it). Defaults
    # to FSTORE_REDIS_CLUSTER, so settings built in code follow the environment as loaded
    # ones do.
    cluster: bool = Field(default_factory=lambda: _env_flag("FSTORE_REDIS_CLUSTER"))
    # Shards of each view version's entities (featurestore/online/layout.py): each shard is one
    # hash slot, so a cluster spreads a view over its nodes by shard. None: 1 on one Redis, 16
    # on a cluster. Fixed for the life of a view version's state: a change moves entities.
    # Defaults to FSTORE_REDIS_SHARDS, as `cluster` does.
    shards: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        default_factory=lambda: _env_int("FSTORE_REDIS_SHARDS")
    )

    @field_validator("namespace")
    @classmethod
    def _no_brace(cls, namespace: str) -> str:
        # A brace would end or start a Redis Cluster hash tag (featurestore/online/layout.py).
        if "{" in namespace or "}" in namespace:
            raise ValueError(f"redis.namespace {namespace!r} holds a brace: leave {{ and }} out")
        return namespace

    @property
    def shard_count(self) -> int:
        """`shards`, or its default for this kind of Redis."""
        return self.shards if self.shards is not None else (16 if self.cluster else 1)

    @property
    def shown_url(self) -> str:
        """The URL as messages show it (errors reach API clients): no password."""
        return url_without_password(self.url)


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    return int(text) if text else None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def url_without_password(url: str) -> str:
    """A service URL with its secrets as ***: the password of its user, and the value of any
    query parameter whose name says it is a secret (`?password=`, `?ssl_password=`, `?token=`;
    `is_secret_name`).

    >>> url_without_password("redis://user:secret@cache:6379/2")
    'redis://user:***@cache:6379/2'
    >>> url_without_password("rediss://cache:6380/0?password=secret&ssl_ca_certs=/etc/ca.pem")
    'rediss://cache:6380/0?password=***&ssl_ca_certs=/etc/ca.pem'
    """
    parts = urlsplit(url)
    shown = url
    if parts.password is not None:
        shown = shown.replace(f":{parts.password}@", ":***@", 1)
    if parts.query:
        # Edited in place (no password or path holds a raw "?", so the first one starts the
        # query), so that everything else keeps its exact spelling: unix:/// stays unix:///.
        base, _, rest = shown.partition("?")
        query, hash_, fragment = rest.partition("#")
        pieces = []
        for piece in query.split("&"):
            name, equals, _value = piece.partition("=")
            secret = equals and is_secret_name(unquote_plus(name))
            pieces.append(f"{name}=***" if secret else piece)
        shown = f"{base}?{'&'.join(pieces)}{hash_}{fragment}"
    return shown


# Words in a setting's or parameter's name that make its value a secret: passwords of every
# kind (sasl.password, ssl.key.password, ?password=), tokens, client secrets, credentials, an
# inline private key (librdkafka's ssl.key.pem) and a JAAS/OAuth config that embeds them.
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|credential|key[._-]?pem|private[._-]?key|jaas|"
    r"sasl[._-]oauthbearer[._-]config|api[._-]?key|access[._-]?key|session[._-]?key",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether a setting (or URL parameter) of this name holds a secret.

    >>> [is_secret_name(n) for n in ("sasl.password", "ssl.key.location", "admin_token")]
    [True, False, True]
    """
    return _SECRET_NAME.search(name) is not None


SECRET_SHOWN = "***"  # noqa: S105 - what a masked secret reads as, not a secret


def masked(value: Any, name: str = "") -> Any:
    """A settings dump (`Settings.model_dump(mode="json")`, or any part of one) with every
    secret replaced by `SECRET_SHOWN`: values under a secret name (`is_secret_name`), and the
    passwords in URLs (`url_without_password`). What `fstore config` prints.

    >>> masked({"kafka": {"properties": {"sasl.password": "pw", "sasl.username": "u"}},
    ...         "redis": {"url": "redis://:pw@cache:6379/0"}})
    {'kafka': {'properties': {'sasl.password': '***', 'sasl.username': 'u'}}, \
'redis': {'url': 'redis://:***@cache:6379/0'}}
    """
    secret = bool(name) and is_secret_name(name)
    if isinstance(value, dict):
        # Under a secret name (`credentials: {...}`) everything is secret.
        return {key: masked(item, name if secret else str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [masked(item, name) for item in value]
    if value is None or isinstance(value, bool):
        return value
    if secret:
        return SECRET_SHOWN
    if isinstance(value, str) and "://" in value:
        return url_without_password(value)
    return value


def _offline_root(value: object) -> object:
    """A local folder (a Path, `~` expanded) or an `s3://bucket/prefix` URI (kept as text)."""
    if isinstance(value, str) and "://" in value:
        scheme, _, rest = value.partition("://")
        bucket = rest.split("/", 1)[0]
        if scheme != "s3" or not bucket:
            raise ValueError(
                f"{value!r} is neither a local folder nor an s3://BUCKET/PREFIX URI "
                "(the offline log lives on a local disk or an S3-compatible object store)"
            )
        return "s3://" + rest.strip("/")
    if isinstance(value, str | Path):
        return Path(value).expanduser()
    return value


# Where the offline log lives: a local folder, or `s3://bucket/prefix`
# (featurestore.offline.storage).
OfflineRoot = Annotated[
    str | Path, Field(union_mode="left_to_right"), BeforeValidator(_offline_root)
]


class OfflineSettings(BaseModel):
    root: OfflineRoot = Path("data/offline")
    # Training-set queries (DuckDB): the memory they may hold before spilling, e.g. "4GB"
    # (None: DuckDB's default, 80% of the machine), and where they spill (None: a temporary
    # folder of the system's).
    memory_limit: str | None = None
    spill_dir: UserPath | None = None
    # An `s3://` root: the S3 endpoint (None: AWS, or AWS_ENDPOINT_URL), its region (None:
    # AWS_REGION / AWS_DEFAULT_REGION) and credentials (None: the AWS chain — AWS_ACCESS_KEY_ID
    # and AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role). Env: FSTORE_OFFLINE_S3_ENDPOINT, ...
    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:8333
    s3_region: str | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_timeout_s: Annotated[float, Field(gt=0)] = 30.0  # connect and request timeout

    @property
    def on_object_store(self) -> bool:
        """Whether the root is an `s3://` URI rather than a local folder."""
        return isinstance(self.root, str)

    @property
    def local_root(self) -> Path:
        """The root folder of a local log; a ConfigError for an `s3://` root."""
        if isinstance(self.root, str):
            raise ConfigError(f"offline.root is {self.root}, not a local folder")
        return self.root


class RegistrySettings(BaseModel):
    """The feature registry: a SQLite file under `path` (the default), or, for serving replicas
    on several hosts, a PostgreSQL database at `url` (`postgresql://user:pw@host:5432/db`, env
    `FSTORE_REGISTRY_URL`), which the model registry then uses too unless `models.url` says."""

    path: UserPath = Path("data/registry")
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        return _database_url(url)

    @property
    def shown_url(self) -> str:
        """Where the registry lives, as messages show it: no password."""
        return url_without_password(self.url) if self.url else str(self.path)


def _database_url(url: str | None) -> str | None:
    if url is None or url.strip() == "":
        return None
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        # The URL itself is not repeated: it may hold a password.
        raise ValueError(
            f"must be a postgresql:// URL (got scheme {scheme!r}); leave it unset for SQLite"
        )
    return url


class ModelsSettings(BaseModel):
    """The model registry: a folder with its metadata DB and the artifacts. Serving replicas
    that share it (a shared volume) see the same versions, aliases and traffic."""

    path: UserPath = Path("data/models")
    # The metadata's PostgreSQL database (None: `registry.url`, else `<path>/models.db`); the
    # artifacts stay files under `path`, which replicas share (a shared volume).
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        return _database_url(url)


class ServingSettings(BaseModel):
    """`fstore serve`: the online scoring API."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 1000  # entity rows per request
    max_body_bytes: int = 1_048_576
    # Deprecated, kept working: prefer API keys (`fstore keys create`). The admin token acts as a
    # key with scope `admin`, the read token as one with every read scope (api_keys.READ_SCOPES).
    admin_token: SecretStr | None = None  # bearer token of alias/traffic changes; None: disabled
    read_token: SecretStr | None = None  # when set, read endpoints need it too
    reload_interval_s: float = 1.0  # how often a server looks for alias/traffic changes
    prediction_log_topic: str = "fstore.predictions"  # "" turns the prediction log off
    prediction_log_queue: int = 100_000  # queued records before new ones are dropped (counted)
    # Load shedding (serving/shedding.py): past either bound a request answers 503 at once, with
    # Retry-After, rather than queueing behind a slow or hung Redis.
    max_in_flight: Annotated[int, Field(ge=1)] = 256  # requests in flight in one process
    redis_deadline_ms: Annotated[float, Field(gt=0)] = 250.0  # a request's online-store read
    # API keys (featurestore/api_keys.py): how often a server rereads them, so a revocation
    # takes effect within this many seconds while no request waits on the registry.
    keys_refresh_s: Annotated[float, Field(gt=0, le=60)] = 2.0


_NO_LATENESS = "0s"  # durations are otherwise longer than zero


class DriftThresholds(BaseModel):
    """When a window's drift is a warning or an alert. PSI conventions: < 0.1 stable,
    0.1-0.25 moderate, > 0.25 major; Jensen-Shannon distance (base 2, in [0, 1]) 0.1 as in
    NannyML. The binned KS statistic alerts only when `ks_alert` is set: with thousands of
    samples a KS test flags differences too small to matter."""

    psi_warn: Annotated[float, Field(ge=0)] = 0.1
    psi_alert: Annotated[float, Field(ge=0)] = 0.25
    js_alert: Annotated[float | None, Field(ge=0, le=1)] = 0.1
    ks_alert: Annotated[float | None, Field(ge=0, le=1)] = None


class WatchSettings(BaseModel):
    """`fstore monitor --watch VIEW`: profile a feature view's raw source columns, before any
    model sees them, against a model's reference profile (`model`, its feature named in
    `features` per column) or, without a model, against the view's offline log."""

    columns: list[str] = Field(default_factory=list)  # numeric source columns; []: all of them
    model: str | None = None  # NAME or NAME@VERSION|ALIAS whose profile is the reference
    features: dict[str, str] = Field(default_factory=dict)  # source column -> model feature
    reference_rows: Annotated[int, Field(ge=1)] = (
        100_000  # newest offline-log events the reference uses
    )


class MonitorSettings(BaseModel):
    """`fstore monitor`: drift and live performance of served models, from the prediction log.

    Windows are tumbling, by the records' event time (`at`); the sliding statistics merge the
    last `sliding_windows` of them. A window with fewer than `min_samples` rows is reported as
    `insufficient`, never as drift. Per-feature thresholds override the defaults field by field.
    """

    drift_topic: str = "fstore.drift"
    alerts_topic: str = "fstore.alerts"
    labels_topic: str = "fstore.labels"  # "" turns the label join off
    window: str = "5m"
    sliding_windows: Annotated[int, Field(ge=1)] = 12  # 12 x 5m: a 1 h sliding window
    allowed_lateness: str = "30s"
    min_samples: Annotated[int, Field(ge=1)] = 200
    min_labels: Annotated[int, Field(ge=1)] = 200  # joined labels a window needs for live metrics
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    feature_thresholds: dict[str, DriftThresholds] = Field(default_factory=dict)
    score_thresholds: DriftThresholds | None = None  # None: the defaults
    label_horizon: str = "1h"  # how long after a prediction its label may come
    # Live primary metric worse than the validation one by more than this (relative):
    # auc < validation x (1 - tolerance), rmse > validation x (1 + tolerance).
    performance_tolerance: Annotated[float, Field(ge=0)] = 0.05
    webhook_url: str | None = None  # POSTed every alert event (JSON)
    webhook_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    command: list[str] | None = None  # run per alert event, the event's JSON on its stdin
    watch: dict[str, WatchSettings] = Field(default_factory=dict)  # view name -> settings
    # A partition with no new record for this long (wall clock; nothing unread in Kafka) stops
    # holding the watermark back, so one idle partition does not stall every window; a record
    # it brings later into a window closed meanwhile counts as late.
    idle_timeout: str = "1m"
    # How long finished state (closed windows kept for the sliding statistics, the label join's
    # index and joined pairs) outlives the span it serves in Redis: the margin for a monitor
    # that stops. Positions, open windows and parked labels never expire.
    state_grace: str = "1d"
    # Records whose features the caller sent (`request_features`) steer their own scores: they
    # stay out of drift and performance statistics unless this is set.
    include_request_features: bool = False

    @field_validator("window", "label_horizon", "idle_timeout", "state_grace")
    @classmethod
    def _duration(cls, text: str) -> str:
        duration_us(text)  # raises ValueError saying what a duration looks like
        return text

    @field_validator("allowed_lateness")
    @classmethod
    def _lateness(cls, text: str) -> str:
        if text != _NO_LATENESS:
            duration_us(text)
        return text

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url {url!r} must be an http:// or https:// URL")
        return url

    @property
    def window_us(self) -> int:
        return duration_us(self.window)

    @property
    def lateness_us(self) -> int:
        return 0 if self.allowed_lateness == _NO_LATENESS else duration_us(self.allowed_lateness)

    @property
    def horizon_us(self) -> int:
        return duration_us(self.label_horizon)

    @property
    def idle_timeout_us(self) -> int:
        return duration_us(self.idle_timeout)

    @property
    def state_grace_us(self) -> int:
        return duration_us(self.state_grace)

    def thresholds_for(self, feature: str | None) -> DriftThresholds:
        """The thresholds of a model feature (None: the score), overrides over the defaults."""
        override = (
            self.score_thresholds if feature is None else self.feature_thresholds.get(feature)
        )
        if override is None:
            return self.thresholds
        return self.thresholds.model_copy(update=override.model_dump(exclude_unset=True))


class ServicesSettings(BaseModel):
    """Where `fstore services up` runs local Kafka and Redis servers."""

    state_dir: UserPath = Field(default_factory=_state_home)  # data, logs, pid files
    cache_dir: UserPath = Field(default_factory=_cache_home)  # resolved Kafka jars, reused
    kafka_version: str = "4.1.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    redis_port: int = 6379
    postgres_port: int = 5432
    # `fstore services up --s3`: SeaweedFS's S3 gateway (its master, volume and filer take free
    # loopback ports of their own), built once from the Go module proxy into cache_dir.
    s3_port: int = 8333
    seaweedfs_version: str = "v0.0.0-20261109003541-7506e5f91cd6"

    @field_validator(
        "kafka_port", "kafka_controller_port", "redis_port", "postgres_port", "s3_port"
    )
    @classmethod
    def _port_in_range(cls, port: int) -> int:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not between 1 and 65535")
        return port


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FSTORE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file sits under the environment: an FSTORE_* variable overrides it.
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @model_validator(mode="after")
    def _models_follow_registry(self) -> Settings:
        """One `registry.url` holds both registries, unless `models.url` names another."""
        if self.models.url is None and self.registry.url is not None:
            self.models = self.models.model_copy(update={"url": self.registry.url})
        return self


class _YamlSource(InitSettingsSource):
    """Reads the YAML file; relative paths in it are relative to the file, not to the cwd."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls, _read_yaml(config_path()))


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_PATH_ENV, CONFIG_FILE_NAME))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        if CONFIG_PATH_ENV in os.environ:
            raise ConfigError(f"{CONFIG_PATH_ENV}={path} does not exist")
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (kafka, redis, ...)")
    base = path.resolve().parent
    for section, key in [
        ("offline", "root"),
        ("registry", "path"),
        ("models", "path"),
        ("services", "state_dir"),
        ("services", "cache_dir"),
    ]:
        value = (data.get(section) or {}).get(key)
        is_uri = isinstance(value, str) and "://" in value  # an s3:// offline root
        if isinstance(value, str) and not is_uri and not Path(value).expanduser().is_absolute():
            data[section][key] = str((base / value).resolve())
    return data


def load_settings(**overrides: Any) -> Settings:
    """Load the settings, turning validation failures into one readable `ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"invalid configuration ({config_path()} / FSTORE_*): {problems}"
        ) from exc
