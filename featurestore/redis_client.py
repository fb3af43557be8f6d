"""How every Redis client of the system is built, and how its failures are worded.

One factory for the blocking clients (redis-py) and for the asyncio pipe the predict path reads
through (`redis_pipe.py`), so both take the same URL the same way: redis://, rediss:// (TLS, with
redis-py's `ssl_*` query parameters: ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs, ...)
or unix://. How long a client waits is a named `Profile`, chosen by who is waiting.

And one wrapper, `redis_errors`, for "Redis cannot serve now": a server that is unreachable or
silent, or that answers an error reply saying "not now" (LOADING, BUSY, READONLY, OOM,
MASTERDOWN, ...: `UNAVAILABLE_REPLIES`), becomes a `RedisUnavailable` — retried by workers, a 503
with Retry-After on the API. The error names the server by its URL without the password, because
its text reaches API clients (a 503's detail), logs and the command line, and never carries the
password anywhere. Any other error reply (WRONGTYPE, ERR ...) is a bug, and passes through.

>>> settings = RedisSettings(url="redis://:s3cret@127.0.0.1:1/0")
>>> with redis_errors(settings):  # doctest: +ELLIPSIS
...     raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
Traceback (most recent call last):
...
featurestore.errors.RedisUnavailable: Redis at redis://:***@127.0.0.1:1/0 is unreachable: ...
>>> with redis_errors(settings, "reading positions"):  # doctest: +ELLIPSIS
...     raise redis.ResponseError("LOADING Redis is loading the dataset in memory")
Traceback (most recent call last):
...
featurestore.errors.RedisUnavailable: Redis at redis://:***@127.0.0.1:1/0 answered LOADING ...

`check_eviction_policy` is the other rule kept here: a Redis that may evict our keys is refused
at the start of every process that writes or serves them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import redis
from redis.commands.core import Script
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from featurestore.config import RedisSettings, url_without_password
from featurestore.errors import ConfigError, RedisUnavailable
from featurestore.redis_pipe import Endpoint, RedisPipe, pack

__all__ = [
    "PROBE",
    "REQUEST",
    "STORE",
    "UNAVAILABLE_REPLIES",
    "Profile",
    "answers",
    "check_cluster_mode",
    "check_eviction_policy",
    "endpoint",
    "make_client",
    "ClusterOnFirstUse",
    "make_cluster_client",
    "make_node_pipe",
    "make_pipe",
    "redis_errors",
    "reply_code",
    "shared_client",
    "tls_context",
]

_log = logging.getLogger("fstore.redis")


@dataclass(frozen=True)
class Profile:
    """How long a client waits for an answer and for a connection. A hung server becomes an
    error (a worker retries, a request answers 503), never a silent stall."""

    name: str
    timeout_s: float
    connect_timeout_s: float


STORE = Profile("store", 30.0, 5.0)
"""The online store and the monitor's state: batches of writes that may take long; a worker
retries what fails."""

REQUEST = Profile("request", 5.0, 2.0)
"""Reads an HTTP request waits on (drift, the dashboard's history)."""

PROBE = Profile("probe", 2.0, 2.0)
""""Does Redis answer?": /readyz, and the demo and `fstore services` looking for a server."""


def make_client(settings: RedisSettings, profile: Profile = STORE) -> redis.Redis:
    """A new client (with its own connection pool) of the configured Redis.

    Timeouts given in the URL (`?socket_timeout=`) win over the profile's, as in redis-py.

    >>> make_client(RedisSettings(url="redis://127.0.0.1:6379/2"), PROBE).get_connection_kwargs()[
    ...     "socket_timeout"]
    2.0
    """
    if settings.cluster:
        return cast(redis.Redis, make_cluster_client(settings, profile))
    return redis.Redis.from_url(
        settings.url,
        socket_timeout=profile.timeout_s,
        socket_connect_timeout=profile.connect_timeout_s,
    )


def make_cluster_client(settings: RedisSettings, profile: Profile = STORE) -> redis.RedisCluster:
    """A client of the Redis Cluster whose node the URL names (`redis.cluster: true`): it finds
    the others, sends each command to the node holding its key's slot, and follows MOVED and
    ASK (a failover, a resharding). `make_client` hands it out typed as `redis.Redis`: callers
    use the commands both speak, and every multi-key call of ours stays in one slot (hash tags,
    featurestore/online/layout.py).

    redis-py reads the cluster's slot map when it builds the client, so a cluster that is down
    would fail the process at its start; the client is built on first use instead, and until
    then every command fails as an unreachable Redis does (`redis.ConnectionError`): a worker
    waits it out, a request gets a 503, as with one Redis."""
    return cast(redis.RedisCluster, ClusterOnFirstUse(settings, profile))


class ClusterOnFirstUse:
    """A `redis.RedisCluster` built on first use, and built again on a later use while the
    cluster cannot be reached (see `make_cluster_client`)."""

    def __init__(self, settings: RedisSettings, profile: Profile) -> None:
        self.settings, self.profile = settings, profile
        self.built: redis.RedisCluster | None = None
        self._lock = threading.Lock()

    def client(self) -> redis.RedisCluster:
        with self._lock:
            if self.built is None:
                try:
                    self.built = redis.RedisCluster.from_url(
                        self.settings.url,
                        socket_timeout=self.profile.timeout_s,
                        socket_connect_timeout=self.profile.connect_timeout_s,
                    )
                except redis.exceptions.RedisClusterException as exc:
                    raise redis.ConnectionError(
                        f"Redis Cluster at {self.settings.shown_url} cannot be reached "
                        f"({type(exc).__name__})"
                    ) from None
            return self.built

    def close(self) -> None:
        if self.built is not None:
            self.built.close()

    def register_script(self, script: str) -> Script:
        """A script object that builds the client when first run (its SHA needs no server)."""
        return Script(self, script)  # type: ignore[arg-type]

    def get_encoder(self) -> Any:
        """How `Script` encodes its text: the built client's encoder, or that of a default
        client (which connects only when used: never, here)."""
        source = self.built if self.built is not None else redis.Redis()
        return source.get_encoder()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client(), name)


def shared_client(settings: RedisSettings, profile: Profile = REQUEST) -> redis.Redis:
    """One pooled client per (URL, profile) for the life of the process, for callers that hold
    none of their own (request handlers): its pool keeps connections open between requests."""
    return _shared(settings.url, settings.cluster, profile)


@functools.lru_cache(maxsize=16)
def _shared(url: str, cluster: bool, profile: Profile) -> redis.Redis:
    return make_client(RedisSettings(url=url, cluster=cluster), profile)


def answers(settings: RedisSettings) -> bool:
    """Whether the configured Redis answers a PING within the probe's timeouts (`fstore
    services`, the demo); any failure is a no."""
    client = make_client(settings, PROBE)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def make_pipe(settings: RedisSettings, profile: Profile = STORE) -> RedisPipe:
    """The asyncio pipelined connection (`redis_pipe.py`) to the configured Redis."""
    return RedisPipe(endpoint(settings.url, profile))


def make_node_pipe(
    settings: RedisSettings, host: str, port: int, profile: Profile = STORE
) -> RedisPipe:
    """The asyncio pipe to one node of the configured Redis Cluster (`host`:`port`, as the
    cluster names it), with the URL's TLS and credentials."""
    base = endpoint(settings.url, profile)
    where = f"{base.where} (cluster node {host}:{port})"
    return RedisPipe(dataclasses.replace(base, where=where, host=host, port=port))


def endpoint(url: str, profile: Profile = STORE) -> Endpoint:
    """Where the asyncio pipe connects, read from a URL as redis-py reads it.

    >>> e = endpoint("rediss://:pw@cache:6380/2?ssl_cert_reqs=none", PROBE)
    >>> (e.where, e.host, e.port, e.setup_count, e.tls is not None, e.timeout_s)
    ('Redis at rediss://:***@cache:6380/2?ssl_cert_reqs=none', 'cache', 6380, 2, True, 2.0)
    """
    options = parse_url(url)  # type: ignore[no-untyped-call]
    setup, count = b"", 0
    password, username = options.get("password"), options.get("username")
    if password:
        auth = (b"AUTH", username.encode()) if username else (b"AUTH",)
        setup += pack(*auth, password.encode())
        count += 1
    db = int(options.get("db", 0))
    if db:
        setup += pack(b"SELECT", str(db).encode())
        count += 1
    is_tls = options.get("connection_class") is SSLConnection
    return Endpoint(
        where=f"Redis at {url_without_password(url)}",
        host=options.get("host", "127.0.0.1"),
        port=int(options.get("port", 6379)),
        path=options.get("path"),
        tls=tls_context(options) if is_tls else None,
        setup=setup,
        setup_count=count,
        timeout_s=float(options.get("socket_timeout", profile.timeout_s)),
        connect_timeout_s=float(options.get("socket_connect_timeout", profile.connect_timeout_s)),
    )


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
# redis-py options the asyncio pipe cannot honour: refused, rather than silently ignored.
_UNSUPPORTED = ("ssl_validate_ocsp", "ssl_validate_ocsp_stapled")


def tls_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS context of a rediss:// URL's options (`redis.connection.parse_url`), built as
    redis-py's `SSLConnection` builds its own: certificates required and the host name checked
    unless `ssl_cert_reqs` / `ssl_check_hostname` say otherwise.

    >>> tls_context({"ssl_cert_reqs": "none"}).verify_mode
    <VerifyMode.CERT_NONE: 0>
    """
    for name in _UNSUPPORTED:
        if options.get(name):
            raise ConfigError(
                f"redis.url asks for {name}, which the asyncio reads of the online store do "
                "not support: remove it from the URL"
            )
    reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        if reqs not in _CERT_REQS:
            raise ConfigError(
                f"redis.url: ssl_cert_reqs={reqs!r} is not one of {', '.join(_CERT_REQS)}"
            )
        reqs = _CERT_REQS[reqs]
    context = ssl.create_default_context()
    # Hostname checking first: a context refuses CERT_NONE while it checks host names.
    context.check_hostname = bool(options.get("ssl_check_hostname", True)) and (
        reqs != ssl.CERT_NONE
    )
    context.verify_mode = reqs
    for flag in options.get("ssl_include_verify_flags") or ():
        context.verify_flags |= flag
    for flag in options.get("ssl_exclude_verify_flags") or ():
        context.verify_flags &= ~flag
    certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
    if keyfile and not certfile:
        raise ConfigError(
            "redis.url names an ssl_keyfile without its ssl_certfile: give both (or only "
            "ssl_certfile, for one file holding the certificate and its key)"
        )
    try:
        if certfile:
            context.load_cert_chain(str(certfile), keyfile, options.get("ssl_password"))
        ca = {k: options.get(f"ssl_{k}") for k in ("ca_certs", "ca_path", "ca_data")}
        if any(v is not None for v in ca.values()):
            context.load_verify_locations(ca["ca_certs"], ca["ca_path"], ca["ca_data"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"redis.url: the TLS files it names cannot be used: {exc}") from exc
    if options.get("ssl_min_version") is not None:
        context.minimum_version = ssl.TLSVersion(int(options["ssl_min_version"]))
    if options.get("ssl_ciphers"):
        context.set_ciphers(options["ssl_ciphers"])
    return context


# Error replies that say "not now" rather than "wrong": the server is loading its data set
# (LOADING), running a long script (BUSY), a read-only replica — a failover under way or done
# (READONLY) —, full under `noeviction` (OOM), cut off from its master (MASTERDOWN), unable to
# persist (MISCONF) or short of the replicas `min-replicas-to-write` asks for (NOREPLICAS); in a
# cluster, resharding or down (TRYAGAIN, CLUSTERDOWN). Each clears by itself or by an operator's
# hand, so a writer waits it out and a request answers 503. Any other error reply is a bug.
UNAVAILABLE_REPLIES = frozenset(
    {
        "LOADING",
        "BUSY",
        "READONLY",
        "OOM",
        "MASTERDOWN",
        "MISCONF",
        "NOREPLICAS",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MOVED",  # a slot still moving after the slot map was read again (a failover)
        "ASK",
    }
)
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# Replies of a server that does not accept who we are, or what this ACL user may do: a wrong
# user or password (WRONGPASS), none given (NOAUTH), a command or key the user lacks (NOPERM).
# Like an outage, they clear only by a hand (the URL's credentials, or the server's ACL), and a
# request answers 503 meanwhile; their message says what to check.
_REFUSED_REPLIES = frozenset({"WRONGPASS", "NOAUTH", "NOPERM"})
_REFUSED_WHAT = {
    "login": "refused our login (check the user and password in redis.url)",
    "NOPERM": "refused a command to our ACL user (allow the user the commands and keys this "
    "needs, e.g. `+@all ~<namespace>:*`)",
}
_TLS_HINT = "check redis.url's ssl_ca_certs, and ssl_certfile/ssl_keyfile if it asks for one"


def reply_code(exc: redis.RedisError) -> str | None:
    """The code an error reply starts with (`LOADING`, `WRONGTYPE`, ...), or None.

    redis-py keeps it as `status_code` (and strips it from the message of the errors it has a
    class for); an error built from a raw reply (the asyncio pipe's) holds it as its first word.

    >>> reply_code(redis.ResponseError("BUSY Redis is busy running a script."))
    'BUSY'
    >>> reply_code(redis.ResponseError("something odd")) is None
    True
    """
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    first = str(exc).split(" ", 1)[0]
    return first if _CODE.fullmatch(first) else None


@contextmanager
def redis_errors(where: RedisSettings | redis.Redis, doing: str = "") -> Iterator[None]:
    """Turn "Redis cannot serve now" into a `RedisUnavailable` naming the server without its
    password: a connection that fails or times out (in redis-py or in the pipe), or an error
    reply in `UNAVAILABLE_REPLIES`, from redis-py or raised from a pipe's answer as a
    `redis.ResponseError`. `where` is the settings, or a client when that is all the caller
    holds; `doing` says what failed.

    Other error replies pass through as they are: they are bugs, not outages.
    """
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
        code = reply_code(exc)
        if code in UNAVAILABLE_REPLIES:
            text = str(exc)
            if text.startswith(f"{code} "):
                text = text[len(code) + 1 :]
            what = f"answered {code}"
        elif code in _REFUSED_REPLIES or isinstance(exc, redis.AuthenticationError):
            code, text = code or "WRONGPASS", str(exc)
            what = _REFUSED_WHAT["NOPERM" if code == "NOPERM" else "login"]
        elif isinstance(exc, redis.ResponseError):
            raise
        elif "[SSL" in str(exc):
            code, text, what = None, str(exc), f"failed the TLS handshake ({_TLS_HINT})"
        else:
            code, text, what = None, str(exc), "is unreachable"
        shown, secrets = _described(where)
        while_ = f" while {doing}" if doing else ""
        # The pipe's errors name the server themselves: once is enough.
        reason = _scrubbed(text, secrets).replace(f"Redis at {shown}", "the server")
        error = RedisUnavailable(
            _scrubbed(f"Redis at {shown} {what}{while_}: {reason}", secrets), reply=code
        )
        if reason != text:
            # The cause's own text holds the password: it must not reach a traceback either.
            raise error from None
        raise error from exc
    except (redis.exceptions.RedisClusterException, redis.exceptions.ClusterError) as exc:
        # A cluster client that cannot reach a node holding the slot, or finds it uncovered (a
        # master down, its replica not yet promoted): an outage like any other.
        shown, secrets = _described(where)
        while_ = f" while {doing}" if doing else ""
        text = _scrubbed(str(exc), secrets)
        raise RedisUnavailable(
            f"Redis Cluster at {shown} is unavailable{while_}: {text}",
            reply=None,
        ) from None


def check_cluster_mode(settings: RedisSettings) -> bool | None:
    """Refuse a Redis whose cluster mode is not the one `redis.cluster` says: a client of one
    server talking to a cluster node works for the keys that node holds and fails on the
    others, and the other way round nothing works. Returns whether the server is a cluster
    node; None when it could not be asked (a warning says why; the first command will)."""
    client = redis.Redis.from_url(
        settings.url,
        socket_timeout=PROBE.timeout_s,
        socket_connect_timeout=PROBE.connect_timeout_s,
    )
    try:
        with redis_errors(settings, "asking whether it is a cluster node"):
            enabled = bool(int(client.info("cluster").get("cluster_enabled", 0)))
    except (RedisUnavailable, redis.ResponseError) as exc:
        _log.warning("%s; could not check its cluster mode against redis.cluster", exc)
        return None
    finally:
        client.close()
    if enabled != settings.cluster:
        what = "a Redis Cluster node" if enabled else "not a cluster node"
        raise ConfigError(
            f"Redis at {settings.shown_url} is {what}, but redis.cluster is "
            f"{str(settings.cluster).lower()}: set redis.cluster: {str(enabled).lower()} "
            f"(FSTORE_REDIS_CLUSTER={str(enabled).lower()})"
        )
    return enabled


# Policies under which Redis, at `maxmemory`, deletes keys to make room. Every key we write has
# a TTL, so the volatile-* policies take ours as readily as the allkeys-* ones.
_EVICTING = ("allkeys-", "volatile-")


def check_eviction_policy(settings: RedisSettings) -> str | None:
    """Refuse a Redis that may evict our keys, unless `redis.allow_eviction` accepts it.

    An evicted tile is a piece of a window's history gone without a trace: its features are
    served as if those events never happened, with status `ok`. Under `noeviction` a full Redis
    refuses writes instead (OOM), which workers wait out and the API answers with 503. Called at
    the start of `fstore ingest`, `fstore monitor` and `fstore serve`.

    Returns the policy; None when it could not be read (a warning says why: Redis is down, or
    CONFIG is disabled or renamed, as on managed Redis or under an ACL, and the check is then
    the operator's). Raises `ConfigError` for an evicting policy that is not accepted.
    """
    check_cluster_mode(settings)
    client = make_client(settings, PROBE)
    try:
        with redis_errors(settings, "reading its maxmemory-policy"):
            if settings.cluster:  # every node: each holds its own slots' keys
                every = redis.RedisCluster.ALL_NODES
                per_node: Any = client.config_get("maxmemory*", target_nodes=every)
                if not _per_node(per_node):
                    per_node = {settings.shown_url: per_node}  # a cluster of one node
                answers = {f"Redis at {name}": answer for name, answer in per_node.items()}
            else:
                one: Any = client.config_get("maxmemory*")
                answers = {f"Redis at {settings.shown_url}": one}
    except RedisUnavailable as exc:
        _log.warning(
            "%s; could not check that it evicts no keys: make sure its maxmemory-policy is "
            "noeviction",
            exc,
        )
        return None
    except redis.ResponseError as exc:  # CONFIG renamed, disabled or not allowed by an ACL
        _log.warning(
            "Redis at %s refused CONFIG GET maxmemory-policy (%s), so this process cannot check "
            "that it evicts no keys: make sure its maxmemory-policy is noeviction (an evicted "
            "tile silently loses part of a window's history)",
            settings.shown_url,
            exc,
        )
        return None
    finally:
        client.close()
    policies = [_checked_policy(settings, where, answer) for where, answer in answers.items()]
    if None in policies:
        return None
    evicting = [p for p in policies if p is not None and p.startswith(_EVICTING)]
    return evicting[0] if evicting else policies[0]


def _per_node(answer: Any) -> bool:
    """Whether a cluster's CONFIG GET answer is per node ({node: {name: value}})."""
    return bool(answer) and all(isinstance(value, dict) for value in answer.values())


def _checked_policy(settings: RedisSettings, where: str, answer: Any) -> str | None:
    """One server's maxmemory-policy, refused as `check_eviction_policy` says."""
    config = {_text(k): _text(v) for k, v in answer.items() if k is not None and v is not None}
    policy = config.get("maxmemory-policy")
    if policy is None:
        _log.warning("%s did not say its maxmemory-policy: make sure it is noeviction", where)
        return None
    if not policy.startswith(_EVICTING):
        return policy
    limit = config.get("maxmemory", "")
    unlimited = " (maxmemory is 0: nothing is evicted until a limit is set)" if limit == "0" else ""
    why = (
        f"{where} has maxmemory-policy {policy}{unlimited}: at its memory "
        "limit it deletes keys, and an evicted tile silently loses part of a window's history "
        "(its features are served as if those events never happened; every key of ours has a "
        "TTL, so volatile-* policies evict them too)"
    )
    if settings.allow_eviction:
        _log.warning("%s; accepted by redis.allow_eviction", why)
        return policy
    raise ConfigError(
        f"{why}. Set `maxmemory-policy noeviction` on that server (a full Redis then refuses "
        "writes, which workers retry and the API answers with 503), or accept the loss with "
        "redis.allow_eviction: true (FSTORE_REDIS_ALLOW_EVICTION=true)"
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _described(
    where: RedisSettings | redis.Redis | redis.RedisCluster | ClusterOnFirstUse,
) -> tuple[str, list[str]]:
    """How messages name the server, and the texts to keep out of them (its password, raw and
    as it appears in a URL)."""
    if isinstance(where, ClusterOnFirstUse):
        where = where.settings if where.built is None else where.built
    if isinstance(where, RedisSettings):
        password = parse_url(where.url).get("password")  # type: ignore[no-untyped-call]
        shown = where.shown_url
    elif isinstance(where, redis.RedisCluster):  # a cluster client (`make_cluster_client`)
        node = where.get_default_node()  # type: ignore[no-untyped-call]
        kwargs = where.nodes_manager.connection_kwargs
        password = kwargs.get("password")
        scheme = "rediss" if kwargs.get("ssl") else "redis"
        user = kwargs.get("username") or ""
        auth = f"{user}:***@" if password else (f"{user}@" if user else "")
        shown = f"{scheme}://{auth}{node.host}:{node.port}/0" if node else "a Redis Cluster"
    else:
        pool = where.connection_pool
        kwargs = pool.connection_kwargs
        password = kwargs.get("password")
        shown = _url_of(pool.connection_class, kwargs)
    if not password:
        return shown, []
    # Longest first, so a shorter form never replaces part of a longer one and leaves the rest.
    forms = {password, quote(password, safe=""), quote(password)}
    return shown, sorted(forms, key=len, reverse=True)


def _url_of(connection_class: type[Any], kwargs: Mapping[str, Any]) -> str:
    """A client's server as a URL without its password (a client keeps no URL)."""
    user = kwargs.get("username") or ""
    auth = f"{user}:***@" if kwargs.get("password") else (f"{user}@" if user else "")
    db = kwargs.get("db", 0)
    if issubclass(connection_class, UnixDomainSocketConnection):
        return f"unix://{auth}{kwargs.get('path')}?db={db}"
    scheme = "rediss" if issubclass(connection_class, SSLConnection) else "redis"
    return f"{scheme}://{auth}{kwargs.get('host')}:{kwargs.get('port')}/{db}"


def _scrubbed(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
