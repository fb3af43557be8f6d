"""The registries' database: a SQLite file (the default) or a PostgreSQL server, one interface.

The feature registry and the model registry keep their metadata here; any other table set (the
API keys, say) uses it the same way, on both backends:

    SCHEMA = Schema("api keys", [Migration(
        sqlite=["CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, digest TEXT NOT NULL)"],
        postgresql=["CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, "
                    "digest TEXT NOT NULL)"],
    )])
    db = Database(settings.registry.url or settings.registry.path / "keys.db", SCHEMA)
    with db.transaction() as conn:  # all writers of "api keys" wait for one another here
        conn.execute("INSERT INTO api_keys (id, digest) VALUES (?, ?)", (key_id, digest))
    with db.connect() as conn:
        row = conn.execute("SELECT digest FROM api_keys WHERE id = ?", (key_id,)).fetchone()

Queries are written once, in the SQL both engines share: `?` or `:name` placeholders (turned
into psycopg's `%s` / `%(name)s`), `INSERT ... ON CONFLICT (...) DO UPDATE`, `RETURNING`,
`IS DISTINCT FROM`. Only the DDL differs (identity columns, triggers), so every migration
gives both. A schema's version is SQLite's `user_version` in its own file, and a row of
`fstore_schema` (one per schema name) in a PostgreSQL database that several schemas share.

A write transaction takes its schema's write lock first — SQLite's `BEGIN IMMEDIATE`, a
PostgreSQL transaction-scoped advisory lock named after the schema — so two writers never both
read version N and write N + 1: the second waits, then sees the first's work. Readers never
wait. Every call takes a connection of its own (SQLite: opened for it; PostgreSQL: an idle one
kept from an earlier call, else a new one); errors become `RegistryError`s that name the database
without its password.

A new table set: give it a `Schema` of its own (its name keys its version and its write lock),
its own SQLite file (one schema per file: the version is the file's), and on PostgreSQL the same
URL as the registries (`registry.url`): tables of every schema live side by side there, so their
names must not clash. A later change is a new `Migration` appended, never an edited one.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from featurestore.config import url_without_password
from featurestore.errors import RegistryError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "BUSY_TIMEOUT_S",
    "POSTGRES_SCHEMES",
    "Connection",
    "Database",
    "Migration",
    "Result",
    "Row",
    "Schema",
    "append_only_postgresql",
    "append_only_sqlite",
    "is_postgres_url",
]

BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another's lock before failing
CONNECT_TIMEOUT_S = 10
POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEMA_LOCK = "fstore schema"  # serialises every migration in one PostgreSQL database


def append_only_sqlite(table: str) -> list[str]:
    """SQLite triggers that refuse every UPDATE and DELETE of `table` (an audit history)."""
    refuse = f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} {refuse}",
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} {refuse}",
    ]


def append_only_postgresql(table: str) -> list[str]:
    """PostgreSQL triggers that refuse every UPDATE, DELETE and TRUNCATE of `table`."""
    return [
        """CREATE OR REPLACE FUNCTION fstore_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION fstore_append_only()""",
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION fstore_append_only()""",
    ]


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and urlsplit(target).scheme in POSTGRES_SCHEMES


@dataclass(frozen=True)
class Migration:
    """One schema step, in each backend's DDL. Statements run in order, in one transaction."""

    sqlite: Sequence[str]
    postgresql: Sequence[str]


@dataclass(frozen=True)
class Schema:
    """A named set of tables; its version is the number of migrations."""

    name: str  # in messages ("model registry") and the key of its version and write lock
    migrations: Sequence[Migration]
    foreign_keys: bool = False  # SQLite enforces them only when asked, per connection

    @property
    def version(self) -> int:
        return len(self.migrations)


class Row:
    """A result row, read by position or by column name (`row[0]`, `row["name"]`)."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: Mapping[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = tuple(values)

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._names[key] if isinstance(key, str) else key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._names)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._names, self._values, strict=True))!r})"


@dataclass
class Result:
    """The rows a statement returned (all fetched: registry results are small)."""

    rows: list[Row] = field(default_factory=list)

    def fetchone(self) -> Row | None:
        return self.rows[0] if self.rows else None

    def one(self) -> Row:
        """The single row of a query that always has one (an aggregate, a RETURNING)."""
        if len(self.rows) != 1:
            raise RegistryError(f"expected one row, the database returned {len(self.rows)}")
        return self.rows[0]

    def fetchall(self) -> list[Row]:
        return self.rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)


class Connection:
    """One open connection, either backend; `execute` takes the shared SQL dialect."""

    def __init__(
        self,
        execute: Callable[[str, Sequence[Any] | Mapping[str, Any]], Result],
        executemany: Callable[[str, Sequence[Sequence[Any]]], None],
        backend: str,
    ) -> None:
        self._execute = execute
        self._executemany = executemany
        self.backend = backend  # "sqlite" or "postgresql"

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Result:
        return self._execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._executemany(sql, rows)


class Database:
    """A schema in a SQLite file (`target` a path) or a PostgreSQL database (`target` a
    `postgresql://` URL), created or migrated on open; a newer schema than this code's is
    refused."""

    def __init__(self, target: str | Path, schema: Schema) -> None:
        self.schema = schema
        self.backend = "postgresql" if is_postgres_url(target) else "sqlite"
        self._impl: _Backend = (
            _Postgres(str(target), schema)
            if self.backend == "postgresql"
            else _Sqlite(Path(target), schema)
        )
        self.shown = self._impl.shown  # the file, or the URL without its password
        self._impl.ensure_schema()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection in autocommit mode: each statement commits on its own."""
        with self._impl.connect() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction holding the schema's write lock; committed at the end of the block,
        rolled back on an exception."""
        with self._impl.transaction(self.schema.name) as conn:
            yield conn


class _Backend(Protocol):
    shown: str

    def connect(self) -> AbstractContextManager[Connection]: ...

    def transaction(self, lock: str) -> AbstractContextManager[Connection]: ...

    def ensure_schema(self) -> None: ...


# -- SQLite


def _sqlite_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return Row({d[0]: i for i, d in enumerate(cursor.description)}, values)


class _Sqlite(_Backend):
    def __init__(self, path: Path, schema: Schema) -> None:
        self.path = path
        self.schema = schema
        self.shown = str(path)
        self.what = schema.name

    @contextmanager
    def _raw(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the {self.what} {self.path}: {exc}") from exc
        conn.row_factory = _sqlite_row
        try:
            if self.schema.foreign_keys:
                conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        except sqlite3.Error as exc:
            raise RegistryError(f"{self.what} {self.path}: {exc}") from exc
        finally:
            conn.close()

    @staticmethod
    def _wrap(conn: sqlite3.Connection) -> Connection:
        def execute(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> Result:
            cursor = conn.execute(sql, params)
            return Result(cursor.fetchall() if cursor.description else [])

        def executemany(sql: str, rows: Sequence[Sequence[Any]]) -> None:
            conn.executemany(sql, rows)

        return Connection(execute, executemany, "sqlite")

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._raw() as conn:
            yield self._wrap(conn)

    @contextmanager
    def transaction(self, lock: str) -> Iterator[Connection]:
        # BEGIN IMMEDIATE takes the file's write lock up front (`lock` is the whole file).
        with self._raw() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._wrap(conn)
            except BaseException:
                if conn.in_transaction:  # some SQLite errors have rolled back already
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def ensure_schema(self) -> None:
        """Opening a file that is up to date takes no write lock: readers never wait."""
        with self._raw() as conn:
            if self._version(conn) == self.schema.version:
                return
            # WAL lets readers go on while one connection writes; the mode is kept in the file.
            conn.execute("PRAGMA journal_mode = WAL")
        with self._raw() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = self._version(conn)
                for migration in self.schema.migrations[found:]:
                    for statement in migration.sqlite:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {self.schema.version:d}")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _version(self, conn: sqlite3.Connection) -> int:
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        return _check_version(found, self.schema, self.shown)


# -- PostgreSQL


@lru_cache(maxsize=512)
def _psycopg_sql(sql: str) -> str:
    """`?` -> `%s`, `:name` -> `%(name)s`, a literal `%` -> `%%` (psycopg's placeholders)."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", sql)


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a schema name."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


class _Postgres(_Backend):
    def __init__(self, url: str, schema: Schema) -> None:
        self.url = url
        self.schema = schema
        self.what = schema.name
        self.shown = url_without_password(url)
        self._secrets = _passwords(url)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _raw(self) -> Iterator[psycopg.Connection[Row]]:
        # Imported here: SQLite users need not have psycopg loaded (or installed).
        try:
            import psycopg
        except ImportError:
            raise RegistryError(
                f"the {self.what} is at {self.shown}, and PostgreSQL needs psycopg: "
                "pip install 'fstore[postgres]'"
            ) from None

        conn = _IDLE.take(self.url)
        if conn is None:
            try:
                conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    row_factory=_pg_rows,
                    connect_timeout=CONNECT_TIMEOUT_S,
                )
            except psycopg.Error as exc:
                raise RegistryError(
                    f"cannot reach the {self.what} database {self.shown}: {self._scrub(str(exc))}"
                ) from None  # the cause's text may carry connection details: not chained
        try:
            yield conn
        except psycopg.Error as exc:
            raise RegistryError(f"{self.what} {self.shown}: {self._scrub(str(exc))}") from None
        finally:
            _IDLE.give(self.url, conn)

    @staticmethod
    def _wrap(conn: psycopg.Connection[Row]) -> Connection:
        def execute(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> Result:
            cursor = conn.execute(_psycopg_sql(sql), params) if params else conn.execute(sql)
            return Result(cursor.fetchall() if cursor.description else [])

        def executemany(sql: str, rows: Sequence[Sequence[Any]]) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(_psycopg_sql(sql), rows)

        return Connection(execute, executemany, "postgresql")

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._raw() as conn:
            yield self._wrap(conn)

    @contextmanager
    def transaction(self, lock: str) -> Iterator[Connection]:
        with self._raw() as conn, conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{int(BUSY_TIMEOUT_S * 1000):d}ms'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(lock),))
            yield self._wrap(conn)

    def ensure_schema(self) -> None:
        with self._raw() as conn:
            if self._version(conn) == self.schema.version:
                return
        # One lock for every schema's migration: two processes (or two schemas) creating
        # `fstore_schema` or the same tables at once would collide in the catalog.
        with self.transaction(_SCHEMA_LOCK) as wrapped:
            wrapped.execute(
                "CREATE TABLE IF NOT EXISTS fstore_schema "
                "(name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            found = self._read_version(wrapped)
            for migration in self.schema.migrations[found:]:
                for statement in migration.postgresql:
                    wrapped.execute(statement)
            wrapped.execute(
                "INSERT INTO fstore_schema (name, version) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                (self.schema.name, self.schema.version),
            )

    def _version(self, conn: psycopg.Connection[Row]) -> int:
        row = conn.execute("SELECT to_regclass('fstore_schema') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            return 0
        return self._read_version(self._wrap(conn))

    def _read_version(self, conn: Connection) -> int:
        row = conn.execute(
            "SELECT version FROM fstore_schema WHERE name = ?", (self.schema.name,)
        ).fetchone()
        return _check_version(0 if row is None else int(row[0]), self.schema, self.shown)


class _IdleConnections:
    """Connections kept open between calls, per process: opening one costs ~20 ms (a server
    process, scram authentication), a registry call ~1 ms. No pool library: a pool's background
    reconnects turn a refused connect into a wait for its timeout, where a caller here must hear
    at once that the server is unreachable or the password wrong."""

    MAX_IDLE = 8  # in all, over every URL: the oldest idle one is closed past it

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[tuple[int, str], psycopg.Connection[Row]]] = []  # newest last
        self._inherited: list[psycopg.Connection[Row]] = []

    def take(self, url: str) -> psycopg.Connection[Row] | None:
        """An idle connection to `url` that still answers, or None (the caller connects)."""
        import psycopg

        key = (os.getpid(), url)  # never a connection a parent process opened
        while True:
            with self._lock:
                found = next(
                    (i for i in range(len(self._idle) - 1, -1, -1) if self._idle[i][0] == key),
                    None,
                )
                if found is None:
                    return None
                _key, conn = self._idle.pop(found)
            try:
                conn.execute("")  # the server may have closed it (a restart, an idle timeout)
            except psycopg.Error:
                conn.close()
                continue
            return conn

    def forget(self) -> None:
        """In a forked child: the parent's connections are not ours to use or close (closing
        one would end the parent's session on the shared socket), so they are kept unused."""
        self._inherited = [conn for _key, conn in self._idle]
        self._idle = []
        self._lock = threading.Lock()

    def give(self, url: str, conn: psycopg.Connection[Row]) -> None:
        """Back to the idle ones when it is healthy and outside any transaction."""
        from psycopg.pq import TransactionStatus

        if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            self._idle.append(((os.getpid(), url), conn))
            oldest = self._idle.pop(0)[1] if len(self._idle) > self.MAX_IDLE else None
        if oldest is not None:
            oldest.close()


_IDLE = _IdleConnections()
os.register_at_fork(after_in_child=_IDLE.forget)


def _pg_rows(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], Row]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(names, values)


def _passwords(url: str) -> list[str]:
    """The URL's password, as written and decoded, wherever it is (user:pw@ or ?password=)."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += re.findall(r"(?:^|&)password=([^&]*)", parts.query)
    return [text for secret in found if secret for text in {secret, unquote(secret)}]


def _check_version(found: int, schema: Schema, where: str) -> int:
    if found > schema.version:
        raise RegistryError(
            f"the {schema.name} in {where} has schema version {found}, newer than this fstore "
            f"reads ({schema.version}); upgrade fstore"
        )
    return found
