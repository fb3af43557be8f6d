"""SQLite connections for the registries (feature views, models): one way to open and lock.

Both keep their metadata in a SQLite file that several processes share (WAL mode, set by each
registry's schema setup), so both need the same two things: a connection whose errors name the
file, and a transaction that takes the write lock up front.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from featurestore.errors import RegistryError

__all__ = [
    "connect",
    "ensure_schema",
    "transaction",
]

BUSY_TIMEOUT_S = 30.0


@contextmanager
def connect(path: Path, what: str, foreign_keys: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode; SQLite errors become `RegistryError`s naming `what`."""
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise RegistryError(f"cannot open the {what} {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    try:
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        yield conn
    except sqlite3.Error as exc:
        raise RegistryError(f"{what} {path}: {exc}") from exc
    finally:
        conn.close()


@contextmanager
def transaction(path: Path, what: str, foreign_keys: bool = False) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE takes the write lock up front: two writers cannot both read version N and
    both write N + 1; the second waits (up to the busy timeout), then sees the first's work."""
    with connect(path, what, foreign_keys) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # some SQLite errors have rolled back already
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def ensure_schema(
    path: Path, what: str, statements: Sequence[str], version: int, foreign_keys: bool = False
) -> None:
    """Create the schema `version` in a new file (WAL mode, then `statements` in one write
    transaction); refuse a file that a newer fstore wrote. Opening a file that is up to date
    takes no write lock, so readers never wait for one another."""
    with connect(path, what, foreign_keys) as conn:
        if _schema_version(conn, path, version) == version:
            return
        # WAL lets readers go on while one connection writes; the mode is kept in the file.
        conn.execute("PRAGMA journal_mode = WAL")
    with transaction(path, what, foreign_keys) as conn:
        if _schema_version(conn, path, version) < version:
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")


def _schema_version(conn: sqlite3.Connection, path: Path, known: int) -> int:
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > known:
        raise RegistryError(
            f"{path} has schema version {found}, newer than this fstore reads ({known}); "
            "upgrade fstore"
        )
    return found
