"""API keys: who may call the scoring API, with which scopes, until when, how often.

A key is a name, a set of scopes and a secret. The secret is shown once, at creation; the
registry keeps only its SHA-256 digest (`<registry path>/keys.db`). A slow password hash
(bcrypt, scrypt, argon2) is for secrets people choose, which are guessable; these are 256
random bits (`secrets.token_urlsafe(32)`), which no hash speed makes guessable, and a slow hash
would cost milliseconds on every request. A server looks a digest up in a table it holds in
memory, then compares it with `hmac.compare_digest`.

Scopes (`parse_scope` checks them; `grants` decides):
- `predict:<model>` or `predict:*` — score with a model;
- `features:<feature service>` or `features:*` — read online features (refs outside any service
  need `features:*`);
- `models:read`, `drift:read`, `metrics:read` — the registry's reads, drift, /metrics;
- `admin` — alias, traffic and rollback changes; it grants every other scope too.

Keys are never deleted: a revoked key stays, with who revoked it and when, and `key_audit` keeps
every creation and revocation (rows are only ever inserted). Once any key exists the server
guards every endpoint but the probes, and a revocation or an expiry never turns that off.

The SQL is kept portable (no SQLite-only syntax) for the PostgreSQL registry.

>>> grants(frozenset({"predict:*"}), "predict:fraud")
True
>>> grants(frozenset({"models:read"}), "admin")
False
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from featurestore.config import RegistrySettings
from featurestore.database import (
    Connection,
    Database,
    Migration,
    Row,
    Schema,
    append_only_postgresql,
    append_only_sqlite,
)
from featurestore.errors import RegistryError

__all__ = [
    "ADMIN",
    "DB_FILE_NAME",
    "READ_SCOPES",
    "SECRET_PREFIX",
    "SCOPE_FORMS",
    "ApiKey",
    "KeyAuditEntry",
    "KeyStore",
    "digest",
    "grants",
    "parse_scope",
]

DB_FILE_NAME = "keys.db"
SCHEMA_VERSION = 1
ADMIN = "admin"
SCOPE_FORMS = (
    "predict:<model>",
    "predict:*",
    "features:<feature service>",
    "features:*",
    "models:read",
    "drift:read",
    "metrics:read",
    ADMIN,
)
# What the deprecated `serving.read_token` stands for.
READ_SCOPES = frozenset({"predict:*", "features:*", "models:read", "drift:read", "metrics:read"})
SECRET_PREFIX = "fsk_"  # noqa: S105 - a prefix, not a secret; says what a leaked string is, so secret scanners can match it

_FIXED = frozenset({"models:read", "drift:read", "metrics:read", ADMIN})
_NAMED = re.compile(r"(predict|features):([A-Za-z][A-Za-z0-9_.-]{0,99}|\*)")
_KEY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")

_TABLES = [
    """CREATE TABLE IF NOT EXISTS api_keys (
        name VARCHAR(100) PRIMARY KEY,
        digest CHAR(64) NOT NULL UNIQUE,  -- SHA-256 of the secret, hex
        scopes TEXT NOT NULL,  -- space-separated
        created_at VARCHAR(40) NOT NULL,
        created_by TEXT NOT NULL,
        expires_at VARCHAR(40),  -- NULL: never
        rate_per_s DOUBLE PRECISION,  -- NULL: no limit
        burst INTEGER,
        revoked_at VARCHAR(40),
        revoked_by TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS key_audit (
        id INTEGER PRIMARY KEY,
        at VARCHAR(40) NOT NULL,
        who TEXT NOT NULL,
        action VARCHAR(20) NOT NULL,
        key_name VARCHAR(100) NOT NULL,
        detail TEXT NOT NULL
    )""",
]
SCHEMA = Schema(
    "api keys",
    [
        Migration(
            sqlite=[*_TABLES, *append_only_sqlite("key_audit")],
            postgresql=[*_TABLES, *append_only_postgresql("key_audit")],
        )
    ],
)
assert SCHEMA.version == SCHEMA_VERSION  # noqa: S101 - a new migration bumps both
_KEY_ROWS = (
    "SELECT name, digest, scopes, created_at, created_by, expires_at, rate_per_s, burst, "
    "revoked_at, revoked_by FROM api_keys"
)


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: everything but its secret."""

    name: str
    digest: str
    scopes: frozenset[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    rate_per_s: float | None = None  # requests per second, on average; None: unlimited
    burst: int | None = None  # requests at once above the rate (default: max(1, rate))
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def grants(self, scope: str) -> bool:
        return grants(self.scopes, scope)


@dataclass(frozen=True)
class KeyAuditEntry:
    id: int
    at: datetime
    who: str
    action: str  # "create" | "revoke"
    key_name: str
    detail: str


def digest(secret: str) -> str:
    """The SHA-256 of a secret, hex: what the registry keeps and what a server looks up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scope(text: str) -> str:
    """`text` as a scope, or a `RegistryError` listing the scopes there are.

    >>> parse_scope("predict:fraud")
    'predict:fraud'
    """
    scope = text.strip()
    if scope in _FIXED or _NAMED.fullmatch(scope):
        return scope
    raise RegistryError(f"unknown scope {text!r}: use one of {', '.join(SCOPE_FORMS)}")


def grants(scopes: frozenset[str], needed: str) -> bool:
    """Whether a key with `scopes` may do what needs `needed` (`admin` may do everything;
    `predict:*` any `predict:<model>`, `features:*` any `features:<service>`)."""
    if needed in scopes or ADMIN in scopes:
        return True
    kind, colon, _ = needed.partition(":")
    return bool(colon) and kind in ("predict", "features") and f"{kind}:*" in scopes


class KeyStore:
    """The API keys in `<registry path>/keys.db`, or in the registry's PostgreSQL database
    (`registry.url`). Every call opens its own connection."""

    def __init__(self, config: RegistrySettings) -> None:
        self.path: Path = config.path / DB_FILE_NAME  # unused when `config.url` is set
        self.url = config.url
        self._db: Database | None = None

    def create(
        self,
        name: str,
        scopes: Iterable[str],
        who: str,
        expires_at: datetime | None = None,
        rate_per_s: float | None = None,
        burst: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once: only its digest is kept)."""
        if not _KEY_NAME.fullmatch(name):
            raise RegistryError(
                f"key name {name!r} is invalid: use a letter, then letters, digits, '_', '-' or "
                "'.' (at most 100 in all)"
            )
        parsed = frozenset(parse_scope(scope) for scope in scopes)
        if not parsed:
            raise RegistryError(
                f"key {name!r} needs at least one --scope ({', '.join(SCOPE_FORMS)})"
            )
        if rate_per_s is not None and not rate_per_s > 0:
            raise RegistryError(f"rate {rate_per_s} must be above 0 requests per second")
        if burst is not None and burst < 1:
            raise RegistryError(f"burst {burst} must be at least 1")
        now = datetime.now(UTC)
        if expires_at is not None and expires_at <= now:
            raise RegistryError(f"expiry {expires_at.isoformat()} is already past")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(name, digest(secret), parsed, now, who, expires_at, rate_per_s, burst)
        with self._transaction() as conn:
            if conn.execute("SELECT name FROM api_keys WHERE name = ?", (name,)).fetchone():
                raise RegistryError(
                    f"a key named {name!r} exists already (revoked keys keep their name): "
                    "choose another name"
                )
            conn.execute(
                "INSERT INTO api_keys (name, digest, scopes, created_at, created_by, expires_at, "
                "rate_per_s, burst, revoked_at, revoked_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    name,
                    key.digest,
                    " ".join(sorted(parsed)),
                    now.isoformat(),
                    who,
                    None if expires_at is None else expires_at.isoformat(),
                    rate_per_s,
                    burst,
                ),
            )
            _audit(conn, now, who, "create", name, " ".join(sorted(parsed)))
        return key, secret

    def revoke(self, name: str, who: str) -> ApiKey:
        """Revoke a key for good; servers refuse it from their next refresh on."""
        now = datetime.now(UTC)
        with self._transaction() as conn:
            row = conn.execute(f"{_KEY_ROWS} WHERE name = ?", (name,)).fetchone()
            if row is None:
                known = [r["name"] for r in conn.execute("SELECT name FROM api_keys ORDER BY name")]
                raise RegistryError(f"no key named {name!r} (keys: {', '.join(known) or 'none'})")
            if row["revoked_at"] is not None:
                raise RegistryError(f"key {name!r} was revoked already, at {row['revoked_at']}")
            conn.execute(
                "UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE name = ?",
                (now.isoformat(), who, name),
            )
            _audit(conn, now, who, "revoke", name, "")
            revoked = conn.execute(f"{_KEY_ROWS} WHERE name = ?", (name,)).one()
        return _key(revoked)

    def keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, by name. No file yet: none."""
        if not self._exists():
            return []
        with self._connect() as conn:
            return [_key(row) for row in conn.execute(f"{_KEY_ROWS} ORDER BY name")]

    def history(self) -> list[KeyAuditEntry]:
        if not self._exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, at, who, action, key_name, detail FROM key_audit ORDER BY id"
            ).fetchall()
        return [
            KeyAuditEntry(
                r["id"],
                datetime.fromisoformat(r["at"]),
                r["who"],
                r["action"],
                r["key_name"],
                r["detail"],
            )
            for r in rows
        ]

    def _exists(self) -> bool:
        """Whether there can be keys: a PostgreSQL database, or a keys file made already."""
        return self.url is not None or self.path.exists()

    def _database(self) -> Database:
        if self._db is None:
            if self.url is None:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise RegistryError(
                        f"cannot create the registry folder {self.path.parent}: {exc}"
                    ) from exc
            self._db = Database(self.url or self.path, SCHEMA)
        return self._db

    def _connect(self) -> AbstractContextManager[Connection]:
        return self._database().connect()

    def _transaction(self) -> AbstractContextManager[Connection]:
        return self._database().transaction()


def _audit(conn: Connection, at: datetime, who: str, action: str, name: str, detail: str) -> None:
    # The next id under the write lock the transaction holds: portable, no autoincrement syntax.
    last = conn.execute("SELECT MAX(id) FROM key_audit").one()[0]
    conn.execute(
        "INSERT INTO key_audit (id, at, who, action, key_name, detail) VALUES (?, ?, ?, ?, ?, ?)",
        ((last or 0) + 1, at.isoformat(), who, action, name, detail),
    )


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _key(row: Row) -> ApiKey:
    return ApiKey(
        name=row["name"],
        digest=row["digest"],
        scopes=frozenset(row["scopes"].split()),
        created_at=datetime.fromisoformat(row["created_at"]),
        created_by=row["created_by"],
        expires_at=_when(row["expires_at"]),
        rate_per_s=row["rate_per_s"],
        burst=row["burst"],
        revoked_at=_when(row["revoked_at"]),
        revoked_by=row["revoked_by"],
    )
