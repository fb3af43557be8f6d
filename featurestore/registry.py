"""The feature registry: which definitions are live, and every version a feature view has had.

A view's version changes only when its fingerprint does (what it computes), so online state and
models keyed by `view@version` stay valid across applies that change only descriptions or tags.
Old versions stay readable, for models pinned to them, until removed. The registry is one SQLite
file in WAL mode, or a PostgreSQL database (`registry.url`) that servers on several hosts share:
several processes (workers, the API, the CLI) read while one applies (featurestore/database.py).
Every change (a definition created or updated, a version removed) gains an `audit` row — who,
when, what — in the same transaction; rows are only ever inserted.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from featurestore.actor import default_who
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
from featurestore.definitions import (
    Entity,
    FeatureService,
    FeatureView,
    KafkaSource,
)
from featurestore.errors import DefinitionError, RegistryError
from featurestore.on_demand import OnDemandFeature, RegisteredOnDemand
from featurestore.repo import RepoContents, kind_of, parse_ref

__all__ = [
    "DB_FILE_NAME",
    "SCHEMA_VERSION",
    "ApplyResult",
    "AuditRow",
    "Change",
    "FeaturePlan",
    "PlannedRef",
    "RegisteredView",
    "Registry",
    "SCHEMA",
    "Status",
]

DB_FILE_NAME = "registry.db"
SCHEMA_VERSION = 3  # 2: the audit table (a v1 file gains it on open); 3: on-demand features
_Model = TypeVar("_Model", bound=BaseModel)
_Unversioned = Entity | KafkaSource | FeatureService

_TABLES = """
CREATE TABLE IF NOT EXISTS feature_views (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    topic TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS feature_views_topic ON feature_views (topic);
CREATE TABLE IF NOT EXISTS feature_services (
    name TEXT PRIMARY KEY, definition TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entities (
    name TEXT PRIMARY KEY, definition TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY, definition TEXT NOT NULL, updated_at TEXT NOT NULL
);
"""
_STATEMENTS = [statement for statement in _TABLES.split(";") if statement.strip()]
# Version 2: the audit history. Its own name: one PostgreSQL database holds the model registry's
# `audit` too. Append-only on both backends (a trigger refuses any rewrite).
_AUDIT = """CREATE TABLE IF NOT EXISTS registry_audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER,
    detail TEXT NOT NULL
)"""
# Version 3: request-time features, versioned like views (a changed function is a new version).
_ON_DEMAND = """CREATE TABLE IF NOT EXISTS on_demand_features (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
)"""
# The same DDL reads the same on both backends, but for the triggers.
SCHEMA = Schema(
    "registry",
    [
        Migration(sqlite=_STATEMENTS, postgresql=_STATEMENTS),
        Migration(
            sqlite=[_AUDIT, *append_only_sqlite("registry_audit")],
            postgresql=[_AUDIT, *append_only_postgresql("registry_audit")],
        ),
        Migration(sqlite=[_ON_DEMAND], postgresql=[_ON_DEMAND]),
    ],
)
assert SCHEMA.version == SCHEMA_VERSION  # noqa: S101 - a new migration bumps both

# Statements per unversioned kind; table names are not parameters in SQL, so each is spelled out.
_UNVERSIONED = {
    "entity": (
        "SELECT definition FROM entities WHERE name = ?",
        "INSERT INTO entities (name, definition, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, "
        "updated_at = excluded.updated_at",
    ),
    "source": (
        "SELECT definition FROM sources WHERE name = ?",
        "INSERT INTO sources (name, definition, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, "
        "updated_at = excluded.updated_at",
    ),
    "feature service": (
        "SELECT definition FROM feature_services WHERE name = ?",
        "INSERT INTO feature_services (name, definition, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, "
        "updated_at = excluded.updated_at",
    ),
}

_VIEW_ROWS = "SELECT name, version, fingerprint, definition, created_at, removed FROM feature_views"
# The newest version of each view that is not removed.
_LATEST = (
    "SELECT name, version, fingerprint, definition, created_at FROM feature_views AS v "
    "WHERE removed = 0 AND version = "
    "(SELECT MAX(version) FROM feature_views WHERE name = v.name AND removed = 0)"
)


class Status(StrEnum):
    CREATED = "created"
    UPDATED = "updated"  # a view: new version, the fingerprint changed
    METADATA = "metadata updated"  # a view: description or tags only, same version
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    """What `apply` did to one definition. `version` is set for feature views only."""

    kind: str
    name: str
    status: Status
    version: int | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class ApplyResult:
    changes: list[Change]

    @property
    def views(self) -> list[Change]:
        return [change for change in self.changes if change.kind == "feature view"]

    def status(self, name: str, kind: str = "feature view") -> Status:
        for change in self.changes:
            if (change.kind, change.name) == (kind, name):
                return change.status
        raise KeyError(f"{kind} {name!r} was not applied")


@dataclass(frozen=True)
class RegisteredView:
    """One version of a feature view as registered."""

    view: FeatureView
    version: int
    fingerprint: str
    created_at: datetime  # UTC

    @property
    def name(self) -> str:
        return self.view.name


class Registry:
    """Feature views (versioned), services, entities and sources in `<path>/registry.db`, or
    in the PostgreSQL database at `config.url`.

    Every call opens its own short-lived connection, so one `Registry` may be shared by threads.
    """

    def __init__(self, config: RegistrySettings) -> None:
        self.path = config.path / DB_FILE_NAME  # unused when `config.url` is set
        if config.url is None:
            try:
                config.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(
                    f"cannot create the registry folder {config.path}: {exc}"
                ) from exc
        self.db = Database(config.url or self.path, SCHEMA)

    def apply(self, contents: RepoContents, who: str | None = None) -> ApplyResult:
        """Register a repo's definitions in one transaction: all of them, or none on an error.
        Each change is audited as `who`'s (default: the login name).

        Definitions registered before but missing from `contents` are left alone.
        """
        now = datetime.now(UTC).isoformat()
        changes: list[Change] = []
        with self._transaction() as conn:
            changes.extend(self._put(conn, obj, now) for obj in contents.entities.values())
            changes.extend(self._put(conn, obj, now) for obj in contents.sources.values())
            changes.extend(self._put_view(conn, view, now) for view in contents.views.values())
            changes.extend(
                self._put_on_demand(conn, feature, now) for feature in contents.on_demand.values()
            )
            for service in contents.services.values():
                # Stored with refs only: a service follows its views' latest versions.
                stored = FeatureService(
                    name=service.name,
                    features=list(service.refs()),
                    description=service.description,
                )
                try:
                    self._plan(conn, stored.refs())
                except (RegistryError, DefinitionError) as exc:
                    raise DefinitionError(f"feature service {service.name!r}: {exc}") from None
                changes.append(self._put(conn, stored, now))
            for change in changes:
                if change.status != Status.UNCHANGED:
                    _audit(
                        conn,
                        now,
                        who,
                        "apply",
                        change.kind,
                        change.name,
                        change.version,
                        str(change.status),
                    )
        return ApplyResult(changes)

    def history(self) -> list[AuditRow]:
        """Every audited change, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, at, who, action, kind, name, version, detail FROM registry_audit "
                "ORDER BY id"
            ).fetchall()
        return [AuditRow(**dict(row)) for row in rows]

    def get_view(self, name: str, version: int | None = None) -> RegisteredView:
        """The latest readable version of a view, or the given one."""
        with self._connect() as conn:
            return self._get_view(conn, name, version)

    def list_views(self, all_versions: bool = False) -> list[RegisteredView]:
        """The latest version of every view, or every version not removed, by name then version."""
        with self._connect() as conn:
            if all_versions:
                rows = conn.execute(f"{_VIEW_ROWS} WHERE removed = 0").fetchall()
            else:
                rows = conn.execute(_LATEST).fetchall()
        return sorted((_registered(row) for row in rows), key=lambda r: (r.name, r.version))

    def remove_view(self, name: str, version: int, who: str | None = None) -> None:
        """Make one version unreadable; the previous readable version becomes the latest.
        Audited as `who`'s (default: the login name).

        Version numbers are never reused: the next apply of a changed view gets a new one.
        """
        with self._transaction() as conn:
            self._get_view(conn, name, version)
            conn.execute(
                "UPDATE feature_views SET removed = 1 WHERE name = ? AND version = ?",
                (name, version),
            )
            now = datetime.now(UTC).isoformat()
            _audit(conn, now, who, "remove", "feature view", name, version, "removed")

    def get_service(self, name: str) -> FeatureService:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT definition FROM feature_services WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                names = [r[0] for r in conn.execute("SELECT name FROM feature_services")]
                raise RegistryError(
                    f"unknown feature service {name!r} (registered: "
                    f"{', '.join(sorted(names)) or 'none'}); is it in the repo you applied?"
                )
        return _load(FeatureService, row["definition"])

    def resolve_refs(self, refs: Iterable[str]) -> list[tuple[RegisteredView, str]]:
        """`view:feature` or `view@version:feature` -> (registered view, feature name), in order."""
        with self._connect() as conn:
            return self._resolve(conn, refs)

    def get_on_demand(self, name: str, version: int | None = None) -> RegisteredOnDemand:
        """The latest version of an on-demand feature, or the given one."""
        with self._connect() as conn:
            found = self._get_on_demand(conn, name, version)
        if found is None:
            raise RegistryError(f"unknown on-demand feature {name!r}")
        return found

    def list_on_demand(self, all_versions: bool = False) -> list[RegisteredOnDemand]:
        """The latest version of every on-demand feature, or every version, by name then
        version."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT name, version, fingerprint, definition, created_at FROM on_demand_features"
            ).fetchall()
        registered = [
            RegisteredOnDemand(
                _load(OnDemandFeature, row["definition"]),
                row["version"],
                row["fingerprint"],
                datetime.fromisoformat(row["created_at"]).astimezone(UTC),
            )
            for row in rows
        ]
        if not all_versions:
            latest: dict[str, RegisteredOnDemand] = {}
            for found in registered:
                if found.name not in latest or found.version > latest[found.name].version:
                    latest[found.name] = found
            registered = list(latest.values())
        return sorted(registered, key=lambda r: (r.name, r.version))

    def plan(self, refs: Iterable[str]) -> FeaturePlan:
        """Refs to view features and to on-demand outputs: what to read and what to compute."""
        with self._connect() as conn:
            return self._plan(conn, refs)

    def _plan(self, conn: Connection, refs: Iterable[str]) -> FeaturePlan:
        asked: list[PlannedRef] = []
        views: dict[str, tuple[RegisteredView, str]] = {}
        on_demand: dict[str, RegisteredOnDemand] = {}
        for text in refs:
            ref = parse_ref(text)
            found = self._get_on_demand(conn, ref.view, ref.version)
            if found is None:
                [(registered, feature)] = self._resolve(conn, [text])
                canonical = f"{registered.name}@{registered.version}:{feature}"
                views.setdefault(canonical, (registered, feature))
                asked.append(PlannedRef(text, canonical, feature, None))
                continue
            if ref.feature not in found.feature.outputs:
                raise RegistryError(
                    f"{text!r}: on-demand feature {found.name!r} version {found.version} has no "
                    f"output {ref.feature!r} (it has: {', '.join(found.feature.outputs)})"
                )
            key = f"{found.name}@{found.version}"
            if key not in on_demand:
                on_demand[key] = found
                for pinned, resolved in zip(
                    found.feature.features,
                    self._resolve(conn, found.feature.features),
                    strict=True,
                ):
                    views.setdefault(pinned, resolved)
            asked.append(PlannedRef(text, f"{key}:{ref.feature}", ref.feature, found))
        return FeaturePlan(asked, views, on_demand)

    def _get_on_demand(
        self, conn: Connection, name: str, version: int | None
    ) -> RegisteredOnDemand | None:
        """None when no on-demand feature has this name (it may be a view)."""
        rows = conn.execute(
            "SELECT name, version, fingerprint, definition, created_at FROM on_demand_features "
            "WHERE name = ? ORDER BY version DESC",
            (name,),
        ).fetchall()
        if not rows:
            return None
        for row in rows:
            if version is None or row["version"] == version:
                return RegisteredOnDemand(
                    _load(OnDemandFeature, row["definition"]),
                    row["version"],
                    row["fingerprint"],
                    datetime.fromisoformat(row["created_at"]).astimezone(UTC),
                )
        versions = ", ".join(str(row["version"]) for row in reversed(rows))
        raise RegistryError(
            f"on-demand feature {name!r} has no version {version} (versions: {versions})"
        )

    def _put_on_demand(self, conn: Connection, feature: OnDemandFeature, now: str) -> Change:
        """A new version when the fingerprint changes. Its view refs are stored pinned to the
        versions they resolve to now, so a new version of an input view is a new version here
        too, and a model pinned to this version reads what it was trained on."""
        kind = "on-demand feature"
        clash = conn.execute(
            "SELECT 1 FROM feature_views WHERE name = ? LIMIT 1", (feature.name,)
        ).fetchone()
        if clash is not None:
            raise DefinitionError(
                f"{kind} {feature.name!r}: a feature view has this name; rename one of them"
            )
        try:
            resolved = self._resolve(conn, feature.features)
        except (RegistryError, DefinitionError) as exc:
            raise DefinitionError(f"{kind} {feature.name!r}: {exc}") from None
        pinned = [f"{r.name}@{r.version}:{name}" for r, name in resolved]
        stored = feature.model_copy(update={"features": pinned})
        fingerprint, definition = stored.fingerprint(), _dump(stored)
        latest = conn.execute(
            "SELECT version, fingerprint, definition FROM on_demand_features "
            "WHERE name = ? ORDER BY version DESC LIMIT 1",
            (feature.name,),
        ).fetchone()
        if latest is not None and latest["fingerprint"] == fingerprint:
            if latest["definition"] == definition:
                return Change(kind, feature.name, Status.UNCHANGED, latest["version"], fingerprint)
            conn.execute(
                "UPDATE on_demand_features SET definition = ? WHERE name = ? AND version = ?",
                (definition, feature.name, latest["version"]),
            )
            return Change(kind, feature.name, Status.METADATA, latest["version"], fingerprint)
        version = 1 if latest is None else latest["version"] + 1
        conn.execute(
            "INSERT INTO on_demand_features (name, version, fingerprint, definition, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (feature.name, version, fingerprint, definition, now),
        )
        status = Status.CREATED if latest is None else Status.UPDATED
        return Change(kind, feature.name, status, version, fingerprint)

    def _resolve(self, conn: Connection, refs: Iterable[str]) -> list[tuple[RegisteredView, str]]:
        views: dict[tuple[str, int | None], RegisteredView] = {}
        resolved: list[tuple[RegisteredView, str]] = []
        for text in refs:
            ref = parse_ref(text)
            key = (ref.view, ref.version)
            if key not in views:
                views[key] = self._get_view(conn, ref.view, ref.version)
            registered = views[key]
            if ref.feature not in registered.view.feature_names():
                raise RegistryError(
                    f"{text!r}: feature view {ref.view!r} version {registered.version} has no "
                    f"feature {ref.feature!r} (it has: "
                    f"{', '.join(registered.view.feature_names())})"
                )
            resolved.append((registered, ref.feature))
        return resolved

    def _get_view(self, conn: Connection, name: str, version: int | None) -> RegisteredView:
        rows = conn.execute(
            f"{_VIEW_ROWS} WHERE name = ? ORDER BY version DESC",
            (name,),
        ).fetchall()
        if not rows:
            names = [r[0] for r in conn.execute("SELECT DISTINCT name FROM feature_views")]
            raise RegistryError(
                f"unknown feature view {name!r} (registered: {', '.join(sorted(names)) or 'none'})"
                "; define it in the feature repo and run `fstore apply`"
            )
        readable = [row for row in rows if not row["removed"]]
        if version is None:
            if not readable:
                raise RegistryError(f"every version of feature view {name!r} was removed")
            return _registered(readable[0])
        for row in rows:
            if row["version"] == version:
                if row["removed"]:
                    raise RegistryError(f"version {version} of feature view {name!r} was removed")
                return _registered(row)
        versions = ", ".join(str(row["version"]) for row in reversed(readable)) or "none"
        raise RegistryError(
            f"feature view {name!r} has no version {version} (readable versions: {versions})"
        )

    def _put_view(self, conn: Connection, view: FeatureView, now: str) -> Change:
        fingerprint, definition = view.fingerprint(), _dump(view)
        latest = conn.execute(
            "SELECT version, fingerprint, definition FROM feature_views "
            "WHERE name = ? AND removed = 0 ORDER BY version DESC LIMIT 1",
            (view.name,),
        ).fetchone()
        if latest is not None and latest["fingerprint"] == fingerprint:
            if latest["definition"] == definition:
                status = Status.UNCHANGED
            else:
                status = Status.METADATA
                conn.execute(
                    "UPDATE feature_views SET definition = ? WHERE name = ? AND version = ?",
                    (definition, view.name, latest["version"]),
                )
            return Change("feature view", view.name, status, latest["version"], fingerprint)
        # Numbers of removed versions are not reused: they may still name online state or models.
        (top,) = conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM feature_views WHERE name = ?", (view.name,)
        ).one()
        conn.execute(
            "INSERT INTO feature_views (name, version, fingerprint, topic, definition, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (view.name, top + 1, fingerprint, view.source.topic, definition, now),
        )
        status = Status.CREATED if latest is None else Status.UPDATED
        return Change("feature view", view.name, status, top + 1, fingerprint)

    def _put(self, conn: Connection, obj: _Unversioned, now: str) -> Change:
        kind, name, definition = kind_of(obj), obj.name, _dump(obj)
        select, upsert = _UNVERSIONED[kind]
        row = conn.execute(select, (name,)).fetchone()
        if row is not None and row["definition"] == definition:
            return Change(kind, name, Status.UNCHANGED)
        conn.execute(upsert, (name, definition, now))
        return Change(kind, name, Status.CREATED if row is None else Status.UPDATED)

    def _connect(self) -> AbstractContextManager[Connection]:
        return self.db.connect()

    def _transaction(self) -> AbstractContextManager[Connection]:
        return self.db.transaction()


@dataclass(frozen=True)
class PlannedRef:
    """One asked ref: a view feature (`on_demand` None) or an on-demand output."""

    ref: str  # as asked
    key: str  # `view@version:feature` or `on_demand@version:output`
    feature: str  # the feature or output name
    on_demand: RegisteredOnDemand | None


@dataclass(frozen=True)
class FeaturePlan:
    """What a read of some refs does: the view features to read (those asked, then the inputs
    of the on-demand features asked, each once) and the on-demand features to compute."""

    asked: list[PlannedRef]
    views: dict[str, tuple[RegisteredView, str]]  # `view@version:feature` -> resolved
    on_demand: dict[str, RegisteredOnDemand]  # `name@version` -> registered

    @property
    def has_on_demand(self) -> bool:
        return bool(self.on_demand)


@dataclass(frozen=True)
class AuditRow:
    """One audited change of the feature registry."""

    id: int
    at: str  # ISO 8601, UTC
    who: str
    action: str  # "apply" | "remove"
    kind: str  # "feature view", "entity", "source", "feature service"
    name: str
    version: int | None
    detail: str  # the change's status: created, updated, metadata updated, removed


def _audit(
    conn: Connection,
    at: str,
    who: str | None,
    action: str,
    kind: str,
    name: str,
    version: int | None,
    detail: str,
) -> None:
    # The next id under the transaction's write lock: no autoincrement syntax to port.
    last = conn.execute("SELECT MAX(id) FROM registry_audit").one()[0]
    conn.execute(
        "INSERT INTO registry_audit (id, at, who, action, kind, name, version, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ((last or 0) + 1, at, who or default_who(), action, kind, name, version, detail),
    )


def _dump(obj: BaseModel) -> str:
    # Nones are left out: every optional field defaults to None, and Aggregation's name
    # validator rejects an explicit None (a definitions.py bug), so this keeps the round trip.
    body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def _load(model: type[_Model], text: str) -> _Model:
    try:
        return model.model_validate(orjson.loads(text))
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]["msg"]
        raise RegistryError(
            f"a stored {model.__name__} does not validate with this fstore ({problem}); "
            "re-apply the feature repo"
        ) from exc


def _registered(row: Row) -> RegisteredView:
    return RegisteredView(
        view=_load(FeatureView, row["definition"]),
        version=row["version"],
        fingerprint=row["fingerprint"],
        created_at=datetime.fromisoformat(row["created_at"]).astimezone(UTC),
    )
