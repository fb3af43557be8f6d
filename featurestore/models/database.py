"""The model registry's SQLite file (`models.db`): schema, connections, and rows <-> records.

Alias and traffic rows hold the present; `audit` holds how it came to be and is append-only —
triggers refuse UPDATE and DELETE, so not even a bug in this package can rewrite it. The single
`generation` row is bumped in the same transaction as every change, so a server learns whether
anything moved from one tiny SELECT. WAL mode lets servers read while the CLI writes.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from featurestore import sqlite
from featurestore.errors import RegistryError
from featurestore.models.promotion import AuditEntry
from featurestore.models.versions import DatasetRef, ModelVersion, Objective, Signature

__all__ = [
    "AUDIT_ROWS",
    "DB_FILE_NAME",
    "INSERT_VERSION",
    "SCHEMA_VERSION",
    "VERSION_ROWS",
    "Database",
    "entry_from_row",
    "to_json",
    "version_from_row",
]

DB_FILE_NAME = "models.db"
SCHEMA_VERSION = 1

VERSION_ROWS = (
    "SELECT model, version, objective, artifact, artifact_sha256, signature, label, dataset, "
    "views, params, metrics, primary_metric, libraries, profile, created_at, created_by, "
    "description FROM versions"
)
INSERT_VERSION = (
    "INSERT INTO versions (model, version, objective, artifact, artifact_sha256, signature, "
    "label, dataset, views, params, metrics, primary_metric, libraries, profile, created_at, "
    "created_by, description) VALUES (:model, :version, :objective, :artifact, "
    ":artifact_sha256, :signature, :label, :dataset, :views, :params, :metrics, "
    ":primary_metric, :libraries, :profile, :created_at, :created_by, :description)"
)
AUDIT_ROWS = (
    "SELECT id, model, at, who, action, alias, from_version, to_version, reason, detail FROM audit"
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS versions (
        model TEXT NOT NULL,
        version INTEGER NOT NULL,
        objective TEXT NOT NULL,
        artifact TEXT NOT NULL,  -- relative to the folder, which replicas may mount anywhere
        artifact_sha256 TEXT NOT NULL,
        signature TEXT NOT NULL,
        label TEXT NOT NULL,
        dataset TEXT NOT NULL,
        views TEXT NOT NULL,
        params TEXT NOT NULL,
        metrics TEXT NOT NULL,
        primary_metric TEXT NOT NULL,
        libraries TEXT NOT NULL,
        profile TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        description TEXT NOT NULL,
        PRIMARY KEY (model, version)
    )""",
    """CREATE TABLE IF NOT EXISTS aliases (
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (model, alias),
        FOREIGN KEY (model, version) REFERENCES versions (model, version)
    )""",
    """CREATE TABLE IF NOT EXISTS traffic (
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        weight REAL NOT NULL CHECK (weight > 0 AND weight <= 1),
        PRIMARY KEY (model, alias)
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model TEXT NOT NULL,
        at TEXT NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        alias TEXT,
        from_version INTEGER,
        to_version INTEGER,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_model ON audit (model, alias, id)",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit history is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit history is append-only'); END""",
    "CREATE TABLE IF NOT EXISTS generation (value INTEGER NOT NULL)",
    "INSERT INTO generation (value) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM generation)",
)


class Database:
    """`<folder>/models.db`, created on first use. Each call opens its own short-lived
    connection, as the feature registry does, so one object may be shared by threads."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / DB_FILE_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create the models folder {folder}: {exc}") from exc
        sqlite.ensure_schema(
            self.path, "model registry", _SCHEMA, SCHEMA_VERSION, foreign_keys=True
        )

    def connect(self) -> AbstractContextManager[sqlite3.Connection]:
        """A connection in autocommit mode, foreign keys on; errors become `RegistryError`s."""
        return sqlite.connect(self.path, "model registry", foreign_keys=True)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front: two registers cannot both take
        version N, and the gate cannot judge a production alias that moves under it."""
        return sqlite.transaction(self.path, "model registry", foreign_keys=True)


def version_from_row(row: sqlite3.Row, root: Path) -> ModelVersion:
    """A `versions` row as a record; `root` is this process's path to the models folder."""
    dataset = orjson.loads(row["dataset"])
    return ModelVersion(
        name=row["model"],
        version=int(row["version"]),
        objective=Objective(row["objective"]),
        artifact=root / row["artifact"],
        artifact_sha256=row["artifact_sha256"],
        signature=Signature.from_dict(orjson.loads(row["signature"])),
        label=row["label"],
        dataset=DatasetRef(dataset["name"], int(dataset["version"]), dataset["content_hash"]),
        views={str(k): int(v) for k, v in orjson.loads(row["views"]).items()},
        params=orjson.loads(row["params"]),
        metrics={str(k): float(v) for k, v in orjson.loads(row["metrics"]).items()},
        primary_metric=row["primary_metric"],
        libraries=orjson.loads(row["libraries"]),
        profile=orjson.loads(row["profile"]),
        created_at=datetime.fromisoformat(row["created_at"]).astimezone(UTC),
        created_by=row["created_by"],
        description=row["description"],
    )


def entry_from_row(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        model=row["model"],
        at=datetime.fromisoformat(row["at"]).astimezone(UTC),
        who=row["who"],
        action=row["action"],
        alias=row["alias"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        reason=row["reason"],
        detail=orjson.loads(row["detail"]),
    )


def to_json(value: Any, what: str = "detail") -> str:
    """Sorted-key JSON for a TEXT column; numpy numbers are accepted."""
    try:
        return orjson.dumps(
            value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
        ).decode()
    except orjson.JSONEncodeError as exc:
        raise RegistryError(f"{what} cannot be stored as JSON: {exc}") from exc
