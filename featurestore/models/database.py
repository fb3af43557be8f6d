"""The model registry's database: schema, opening it, and rows <-> records.

A SQLite file (`models.db` in the models folder, WAL mode: servers read while the CLI writes)
or a PostgreSQL database (`models.url`, by default `registry.url`); featurestore/database.py.
Alias and traffic rows hold the present; `audit` holds how it came to be and is append-only —
triggers refuse UPDATE and DELETE (and, on PostgreSQL, TRUNCATE), so not even a bug in this
package can rewrite it. The single `generation` row is bumped in the same transaction as every
change, so a server learns whether anything moved from one tiny SELECT.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from featurestore.database import (
    Database,
    Migration,
    Row,
    Schema,
    append_only_postgresql,
    append_only_sqlite,
)
from featurestore.errors import RegistryError
from featurestore.models.promotion import AuditEntry
from featurestore.models.versions import DatasetRef, ModelVersion, Objective, Signature

__all__ = [
    "AUDIT_ROWS",
    "DB_FILE_NAME",
    "INSERT_VERSION",
    "SCHEMA",
    "SCHEMA_VERSION",
    "VERSION_ROWS",
    "entry_from_row",
    "open_database",
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

_SQLITE = (
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
    *append_only_sqlite("audit"),
    "CREATE TABLE IF NOT EXISTS generation (value INTEGER NOT NULL)",
    "INSERT INTO generation (value) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM generation)",
)


# The same tables in PostgreSQL's DDL: an identity column for the audit id, DOUBLE PRECISION for
# the weights (REAL is 4 bytes there), and a trigger function that refuses rewrites.
_VERSIONS, _ALIASES, _TRAFFIC, _AUDIT, _AUDIT_INDEX, _NO_UPDATE, _NO_DELETE, *_GENERATION = _SQLITE
_POSTGRESQL = (
    _VERSIONS,
    _ALIASES,
    """CREATE TABLE IF NOT EXISTS traffic (
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        weight DOUBLE PRECISION NOT NULL CHECK (weight > 0 AND weight <= 1),
        PRIMARY KEY (model, alias)
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    _AUDIT_INDEX,
    *append_only_postgresql("audit"),
    *_GENERATION,
)

SCHEMA = Schema(
    "model registry", [Migration(sqlite=_SQLITE, postgresql=_POSTGRESQL)], foreign_keys=True
)
assert SCHEMA.version == SCHEMA_VERSION  # noqa: S101 - a new migration bumps both


def open_database(folder: Path, url: str | None) -> Database:
    """The PostgreSQL database at `url`, or `<folder>/models.db` (created on first use)."""
    if url is not None:
        return Database(url, SCHEMA)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"cannot create the models folder {folder}: {exc}") from exc
    return Database(folder / DB_FILE_NAME, SCHEMA)


def version_from_row(row: Row, root: Path) -> ModelVersion:
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


def entry_from_row(row: Row) -> AuditEntry:
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
