"""Who is calling, and may they: API keys (featurestore/api_keys.py) checked on every request.

The rule, in one place for both ways in (FastAPI routes through `Guard`, the predict fast path
through `KeyRing.authorize`):
- Once any key exists in the registry (revoked and expired ones count: a revocation never
  reopens a server), or the deprecated `serving.read_token` is set, every endpoint but the probes
  and the dashboard's static files needs a key whose scopes grant the endpoint's scope: 401
  without a valid key (unknown, expired, revoked: it says which), 403 naming the scope needed.
- With no key at all, reads are open — `fstore serve` then listens only on loopback unless told
  `--insecure` (serving/cli.py) — and admin still needs a key with `admin`.
- A key with a rate (`fstore keys create --rate`) has a token bucket; past it, 429 with
  Retry-After.

The keys live in memory, looked up by their digest, and a thread rereads them every
`serving.keys_refresh_s`: a revocation or a new key takes effect within that bound (plus one
read of the registry), and no request waits on the registry. Per request: one SHA-256 of the
secret, a dict lookup, `hmac.compare_digest`, a set lookup.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import Scope

from featurestore.api_keys import ADMIN, READ_SCOPES, ApiKey, KeyStore, digest, grants
from featurestore.config import Settings
from featurestore.errors import FeatureStoreError
from serving.errors import Forbidden, RateLimited, Unauthorized

__all__ = [
    "LEGACY_ADMIN",
    "LEGACY_READ",
    "OPEN_ROUTES",
    "Caller",
    "Guard",
    "KeyRing",
    "TokenBucket",
    "bearer_of",
    "guards_reads",
]

log = logging.getLogger(__name__)

LEGACY_ADMIN = "serving.admin_token"  # the audit's "who" for the deprecated tokens
LEGACY_READ = "serving.read_token"
# Routes open to all, by (method, path): probes (/readyz shows model names only to a key with
# `models:read`), the dashboard's page and static files (they hold no data), the API docs.
OPEN_ROUTES = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/ui"),
        ("GET", "/ui/static/{name}"),
        ("GET", "/ui/vendor/plotly.min.js"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
    }
)
_PREFIX_CHARS = 16  # of the hex digest: the table's key; the whole digest is then compared


class TokenBucket:
    """`rate` requests per second on average, `burst` at once. Used on the event loop only."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, now: float) -> float:
        """0 when a request may go now (a token taken), else the seconds until one may."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


@dataclass(frozen=True, eq=False)
class Caller:
    """A key as a server holds it: what the audit calls it, what it may do, until when."""

    name: str
    digest: str
    scopes: frozenset[str]
    expires_at: float | None = None  # POSIX seconds
    revoked: bool = False
    bucket: TokenBucket | None = field(default=None, compare=False)

    def grants(self, scope: str) -> bool:
        return grants(self.scopes, scope)


def guards_reads(settings: Settings) -> bool:
    """Whether a server with these settings guards its reads: a key exists in the registry (of
    any state) or the deprecated read token is set."""
    return settings.serving.read_token is not None or bool(KeyStore(settings.registry).keys())


def bearer_of(authorization: str | None) -> str | None:
    """The secret of an `Authorization: Bearer <secret>` header value, as FastAPI's
    `HTTPBearer` reads it (scheme in any case); None for anything else."""
    if not authorization:
        return None
    scheme, credentials = get_authorization_scheme_param(authorization)
    secret = credentials.strip()
    return secret if scheme.lower() == "bearer" and secret else None


class KeyRing:
    """The keys a server accepts, reread every `serving.keys_refresh_s` on a thread."""

    def __init__(self, settings: Settings) -> None:
        self.store = KeyStore(settings.registry)
        self.refresh_s = settings.serving.keys_refresh_s
        config = settings.serving
        self._legacy = [
            ApiKey(name, digest(token.get_secret_value()), scopes, datetime.now(UTC), "config")
            for name, token, scopes in (
                (LEGACY_ADMIN, config.admin_token, frozenset({ADMIN})),
                (LEGACY_READ, config.read_token, READ_SCOPES),
            )
            if token is not None
        ]
        self._read_token = config.read_token is not None
        # Until the registry is read, everything is guarded: unknown is never open.
        self.guarded = True
        self._table: dict[str, Caller] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Read the keys (a registry that cannot be read fails the start), then keep rereading."""
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="fstore-key-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def refresh(self) -> None:
        stored = self.store.keys()
        old = self._table
        table: dict[str, Caller] = {}
        for key in [*stored, *self._legacy]:
            previous = old.get(key.digest[:_PREFIX_CHARS])
            table[key.digest[:_PREFIX_CHARS]] = Caller(
                key.name,
                key.digest,
                key.scopes,
                None if key.expires_at is None else key.expires_at.timestamp(),
                key.revoked_at is not None,
                _bucket(key, previous),
            )
        # One assignment each: a request on the event loop sees the old table or the new one.
        self._table = table
        self.guarded = bool(stored) or self._read_token

    def _poll(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except FeatureStoreError as exc:  # the last keys read stay in force meanwhile
                log.warning("API keys: cannot reread the key registry: %s", exc)

    def guards(self, scope: str) -> bool:
        return self.guarded or scope == ADMIN

    def identify(self, secret: str) -> Caller:
        """The caller whose secret this is; 401 for an unknown, expired or revoked key."""
        found = digest(secret)
        caller = self._table.get(found[:_PREFIX_CHARS])
        if caller is None or not hmac.compare_digest(caller.digest, found):
            raise Unauthorized(
                "unknown API key: send a key made by `fstore keys create` as "
                "'Authorization: Bearer <secret>'"
            )
        if caller.revoked:
            raise Unauthorized(f"API key {caller.name!r} is revoked")
        if caller.expires_at is not None and time.time() >= caller.expires_at:
            when = datetime.fromtimestamp(caller.expires_at, UTC).isoformat()
            raise Unauthorized(f"API key {caller.name!r} expired at {when}")
        return caller

    def authorize(self, secret: str | None, scope: str) -> Caller | None:
        """The caller, allowed `scope` and within its rate; None when `scope` is open (no keys
        exist). Raises 401, 403 or 429."""
        if not self.guards(scope):
            return None
        caller = self.authenticate(secret, scope)
        self.check(caller, scope)
        return caller

    def authenticate(self, secret: str | None, scope: str) -> Caller:
        """The caller (rate-limited), before the scope is known in full (features: the body
        names the service)."""
        if secret is None:
            raise Unauthorized(
                f"this endpoint needs an API key with scope {scope!r}: send "
                "'Authorization: Bearer <secret>' (`fstore keys create NAME --scope "
                f"{scope}` makes one)"
            )
        caller = self.identify(secret)
        bucket = caller.bucket
        if bucket is not None:
            wait = bucket.take(time.monotonic())
            if wait > 0:
                raise RateLimited(
                    f"API key {caller.name!r} is over its rate of {bucket.rate:g} requests per "
                    f"second: retry after {math.ceil(wait)} s",
                    wait,
                )
        return caller

    def check(self, caller: Caller | None, scope: str) -> None:
        """403 unless `caller` may do `scope` (None: the scope is open, or it is refused)."""
        if caller is None:
            if self.guards(scope):
                raise Unauthorized(f"this endpoint needs an API key with scope {scope!r}")
            return
        if not caller.grants(scope):
            raise Forbidden(
                f"API key {caller.name!r} lacks the scope {scope!r} this needs (it has: "
                f"{', '.join(sorted(caller.scopes))})"
            )

    def authorize_scope(self, scope: Scope, needed: str) -> Caller | None:
        """`authorize` for a raw ASGI request (the predict fast path)."""
        if not self.guards(needed):
            return None
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        return self.authorize(bearer_of(header), needed)


def _bucket(key: ApiKey, previous: Caller | None) -> TokenBucket | None:
    if key.rate_per_s is None:
        return None
    burst = key.burst if key.burst is not None else max(1, math.ceil(key.rate_per_s))
    kept = previous.bucket if previous is not None else None
    if kept is not None and kept.rate == key.rate_per_s and kept.burst == burst:
        return kept  # a refresh does not refill anyone's bucket
    return TokenBucket(key.rate_per_s, burst)


# Declared for OpenAPI ("Authorize" in /docs); the checks are KeyRing's.
_BEARER = HTTPBearer(auto_error=False, description="An API key: `fstore keys create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]


class Guard:
    """A route's dependency: the key must grant `scope`, whose `{model}` is the path's model.
    `{service}` (features) is known only from the body: the guard checks the key and the route
    checks the scope (`KeyRing.check`). With `required=False` (/readyz) a missing or invalid
    key is no error: the route gets None and shows less."""

    def __init__(self, scope: str, required: bool = True) -> None:
        self.scope = scope
        self.required = required

    def __repr__(self) -> str:
        return f"Guard({self.scope!r})"

    # async: FastAPI would run a plain `def` dependency in its thread pool, a hop per request.
    async def __call__(self, request: Request, credentials: Credentials) -> Caller | None:
        ring: KeyRing = request.app.state.serving.keys
        secret = None if credentials is None else (credentials.credentials.strip() or None)
        if not self.required:
            try:
                return None if secret is None else ring.identify(secret)
            except Unauthorized:
                return None
        if "{service}" in self.scope:
            needed = self.scope.replace("{service}", "*")
            return ring.authenticate(secret, needed) if ring.guards(needed) else None
        needed = self.scope.format_map(request.path_params) if "{" in self.scope else self.scope
        return ring.authorize(secret, needed)
