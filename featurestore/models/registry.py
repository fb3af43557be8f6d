"""The model registry: versions with their lineage, aliases, traffic weights and an audit history.

Storage: `<models.path>/models.db` (SQLite, WAL) or the PostgreSQL database at `models.url`
(by default `registry.url`) for the metadata, and `<models.path>/<model>/v<N>/model.txt` for
each artifact, in LightGBM's text format (never pickle), with its SHA-256 recorded.
Several serving replicas may share the folder.

Aliases (`production`, `canary`, `shadow`, any name) point at versions. Promotion to
`production` is gated on the primary validation metric; every alias or traffic change is
appended to the audit history (who, when, from, to, why), which is never rewritten.
The records and rules live beside this module (`versions.py`, `promotion.py`) and are
re-exported here.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from platform import python_version
from typing import Any

import orjson

from featurestore.config import ModelsSettings
from featurestore.database import Connection
from featurestore.errors import RegistryError
from featurestore.models.artifacts import ARTIFACT_NAME, write_atomically
from featurestore.models.database import (
    AUDIT_ROWS,
    INSERT_VERSION,
    VERSION_ROWS,
    entry_from_row,
    open_database,
    to_json,
    version_from_row,
)
from featurestore.models.promotion import (
    CANARY,
    HIGHER_IS_BETTER,
    PRODUCTION,
    SHADOW,
    AuditEntry,
    PromotionRefused,
    Rollout,
    Scored,
    check_name,
    gate,
    normalise_weights,
)
from featurestore.models.versions import (
    DatasetRef,
    FeatureSpec,
    ModelVersion,
    Objective,
    Signature,
)

__all__ = [
    "CANARY",
    "PRODUCTION",
    "SHADOW",
    "AuditEntry",
    "DatasetRef",
    "FeatureSpec",
    "ModelRegistry",
    "ModelVersion",
    "Objective",
    "PromotionRefused",
    "Rollout",
    "Signature",
]

_SET_ALIAS = (
    "INSERT INTO aliases (model, alias, version) VALUES (?, ?, ?) "
    "ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version"
)
# Audit actions that move an alias, which `rollback` undoes.
_ALIAS_CHANGES = ("alias", "remove_alias", "rollback")


class ModelRegistry:
    """Model versions, aliases, traffic and audit history under `config.path`.

    Every call opens its own short-lived connection (as the feature registry does), so one
    object may be shared by threads, and every process sharing the folder sees each change as
    soon as it commits.
    """

    def __init__(self, config: ModelsSettings) -> None:
        self.config = config
        self.root = config.path
        self.db = open_database(self.root, config.url)

    # -- versions
    def register(
        self,
        name: str,
        model_text: str,  # LightGBM Booster.model_to_string()
        *,
        objective: Objective,
        signature: Signature,
        label: str,
        dataset: DatasetRef,
        views: dict[str, int],
        params: dict[str, Any],
        metrics: dict[str, float],
        primary_metric: str,
        profile: dict[str, Any],
        who: str,
        description: str = "",
        libraries: dict[str, str] | None = None,
    ) -> ModelVersion:
        """Store the artifact and its metadata as the next version (1, 2, ...).

        `libraries` defaults to the versions installed here, where training just ran.
        """
        check_name(name, "model")
        _check_who(who)
        objective = _objective(objective)
        if not model_text.startswith("tree"):
            raise RegistryError(
                "model_text is not a LightGBM text model (Booster.model_to_string() starts with "
                "'tree'); the registry stores LightGBM's text format only, never pickles"
            )
        if not signature.features:
            raise RegistryError(f"model {name!r}: the signature has no features")
        if primary_metric not in HIGHER_IS_BETTER:
            raise RegistryError(
                f"primary metric {primary_metric!r} is not one the gate knows "
                f"({', '.join(HIGHER_IS_BETTER)})"
            )
        clean_metrics = _finite_metrics(metrics)
        if primary_metric not in clean_metrics:
            raise RegistryError(
                f"metrics lack the primary metric {primary_metric!r} (have: "
                f"{', '.join(clean_metrics) or 'none'})"
            )
        encoded = model_text.encode()
        digest = hashlib.sha256(encoded).hexdigest()
        dataset_json = {
            "name": dataset.name,
            "version": dataset.version,
            "content_hash": dataset.content_hash,
        }
        record = {
            "objective": objective.value,
            "artifact_sha256": digest,
            "signature": to_json(signature.to_dict(), "signature"),
            "label": label,
            "dataset": to_json(dataset_json, "dataset"),
            "views": to_json(views, "views"),
            "params": to_json(params, "params"),
            "metrics": to_json(clean_metrics, "metrics"),
            "primary_metric": primary_metric,
            "libraries": to_json(libraries if libraries is not None else _libraries(), "libraries"),
            "profile": to_json(profile, "profile"),
            "created_at": datetime.now(UTC).isoformat(),
            "created_by": who,
            "description": description,
        }
        written: Path | None = None
        try:
            with self.db.transaction() as conn:
                (version,) = conn.execute(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE model = ?", (name,)
                ).one()
                relative = Path(name) / f"v{version}" / ARTIFACT_NAME
                # Written under the write lock: no other register can be writing this version.
                written = self.root / relative
                write_atomically(written, encoded)
                row = {"model": name, "version": version, "artifact": relative.as_posix()}
                row.update(record)
                conn.execute(INSERT_VERSION, row)
                self._audit(
                    conn, name, who, "register", None, None, version, "", {"sha256": digest}
                )
                stored = conn.execute(
                    f"{VERSION_ROWS} WHERE model = ? AND version = ?", (name, version)
                ).one()
        except BaseException:
            if written is not None:  # the version was not committed: leave no orphan file
                written.unlink(missing_ok=True)
            raise
        return version_from_row(stored, self.root)

    def get(self, name: str, version: int | str | None = None) -> ModelVersion:
        """A version by number, by alias name, or (None) the production alias's version.
        Unknown model / version / alias: RegistryError naming what exists."""
        with self.db.connect() as conn:
            number = self._resolve(conn, name, PRODUCTION if version is None else version)
            row = conn.execute(
                f"{VERSION_ROWS} WHERE model = ? AND version = ?", (name, number)
            ).one()
        return version_from_row(row, self.root)

    def models(self) -> list[str]:
        with self.db.connect() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT model FROM versions ORDER BY 1")]

    def versions(self, name: str) -> list[ModelVersion]:
        with self.db.connect() as conn:
            rows = conn.execute(
                f"{VERSION_ROWS} WHERE model = ? ORDER BY version", (name,)
            ).fetchall()
            if not rows:
                self._unknown_model(conn, name)
        return [version_from_row(row, self.root) for row in rows]

    def load_text(self, version: ModelVersion) -> str:
        """The artifact's text, checked against its recorded SHA-256 (RegistryError if not)."""
        try:
            data = version.artifact.read_bytes()
        except OSError as exc:
            raise RegistryError(
                f"cannot read the artifact of {version.ref} at {version.artifact}: {exc}"
            ) from exc
        found = hashlib.sha256(data).hexdigest()
        if found != version.artifact_sha256:
            raise RegistryError(
                f"the artifact of {version.ref} at {version.artifact} has SHA-256 {found}, not "
                f"the {version.artifact_sha256} registered: it was modified or corrupted; "
                "register the model again"
            )
        return data.decode()

    # -- aliases and traffic (every change audited)
    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        who: str,
        reason: str = "",
        force: bool = False,
        tolerance: float = 0.01,
    ) -> AuditEntry:
        """Point `alias` at `version`. For `production`: refused (PromotionRefused) when the
        candidate's primary metric is worse than the current production's by more than
        `tolerance` (absolute), unless force=True — which needs a non-empty reason."""
        check_name(alias, "alias")
        _check_who(who)
        if force and not reason.strip():
            raise RegistryError(
                "forcing past the promotion gate needs a reason (reason=..., CLI: --reason), "
                "for the audit history"
            )
        if not (tolerance >= 0 and math.isfinite(tolerance)):
            raise RegistryError(f"tolerance must be a finite number >= 0, not {tolerance}")
        with self.db.transaction() as conn:
            number = self._resolve(conn, name, int(version))
            current = self._aliases(conn, name).get(alias)
            detail: dict[str, Any] = {}
            if alias == PRODUCTION and current is not None and current != number:
                production = self._scored(conn, name, current)
                detail = gate(name, production, self._scored(conn, name, number), tolerance, force)
            conn.execute(
                _SET_ALIAS,
                (name, alias, number),
            )
            return self._audit(conn, name, who, "alias", alias, current, number, reason, detail)

    def remove_alias(self, name: str, alias: str, *, who: str, reason: str = "") -> AuditEntry:
        """Drop an alias. One that takes traffic is kept: set the traffic without it first."""
        _check_who(who)
        with self.db.transaction() as conn:
            current = self._alias(conn, name, alias)
            weights = self._traffic(conn, name, default=False)
            if weights.get(alias, 0.0) > 0:
                raise RegistryError(
                    f"alias {alias!r} of model {name!r} takes {weights[alias]:.0%} of the traffic "
                    f"({_weights_text(weights)}); set the traffic without it first"
                )
            conn.execute("DELETE FROM aliases WHERE model = ? AND alias = ?", (name, alias))
            return self._audit(conn, name, who, "remove_alias", alias, current, None, reason, {})

    def rollback(
        self, name: str, alias: str = PRODUCTION, *, who: str, reason: str = ""
    ) -> AuditEntry:
        """Point `alias` back at the version it held before its last change (not gated).

        A rollback is a change too: a second one undoes the first, as `kubectl rollout undo`
        does. Changes that moved nothing (set to the version it held) are skipped.
        """
        _check_who(who)
        with self.db.transaction() as conn:
            self._resolve_model(conn, name)
            last = conn.execute(
                "SELECT id, action, from_version, to_version, who, at FROM audit "
                "WHERE model = ? AND alias = ? AND action IN (?, ?, ?) "
                "AND from_version IS DISTINCT FROM to_version ORDER BY id DESC LIMIT 1",
                (name, alias, *_ALIAS_CHANGES),
            ).fetchone()
            if last is None:
                raise RegistryError(
                    f"alias {alias!r} of model {name!r} was never changed: nothing to roll back "
                    f"to ({self._describe(conn, name)})"
                )
            if last["from_version"] is None:
                raise RegistryError(
                    f"alias {alias!r} of model {name!r} did not exist before its last change "
                    f"(audit entry {last['id']}: {last['action']} to version "
                    f"{last['to_version']} by {last['who']} at {last['at']}): nothing to roll "
                    f"back to; point it at a version with set_alias or remove it"
                )
            current = self._aliases(conn, name).get(alias)
            target = int(last["from_version"])
            conn.execute(
                _SET_ALIAS,
                (name, alias, target),
            )
            detail = {"undoes": int(last["id"])}
            return self._audit(conn, name, who, "rollback", alias, current, target, reason, detail)

    def set_traffic(
        self, name: str, weights: dict[str, float], *, who: str, reason: str = ""
    ) -> AuditEntry:
        """Weights per alias (e.g. {"production": 0.9, "canary": 0.1}), normalised to sum 1;
        every alias must exist. A shadow alias takes no traffic: it mirrors it."""
        _check_who(who)
        normalised = normalise_weights(weights)
        with self.db.transaction() as conn:
            self._resolve_model(conn, name)
            aliases = self._aliases(conn, name)
            missing = sorted(set(normalised) - set(aliases))
            if missing:
                raise RegistryError(
                    f"model {name!r} has no alias {', '.join(map(repr, missing))} "
                    f"({self._describe(conn, name)}); point one at a version first"
                )
            previous = self._traffic(conn, name, default=True)
            conn.execute("DELETE FROM traffic WHERE model = ?", (name,))
            conn.executemany(
                "INSERT INTO traffic (model, alias, weight) VALUES (?, ?, ?)",
                [(name, alias, weight) for alias, weight in normalised.items()],
            )
            detail = {"weights": normalised, "previous": previous}
            return self._audit(conn, name, who, "traffic", None, None, None, reason, detail)

    def history(self, name: str | None = None) -> list[AuditEntry]:
        """Audit entries, oldest first; of one model, or of all."""
        with self.db.connect() as conn:
            if name is None:
                rows = conn.execute(f"{AUDIT_ROWS} ORDER BY id").fetchall()
            else:
                self._resolve_model(conn, name)
                rows = conn.execute(f"{AUDIT_ROWS} WHERE model = ? ORDER BY id", (name,)).fetchall()
        return [entry_from_row(row) for row in rows]

    def rollout(self, name: str) -> Rollout:
        with self.db.connect() as conn:
            self._resolve_model(conn, name)
            return Rollout(name, self._aliases(conn, name), self._traffic(conn, name, default=True))

    def generation(self) -> int:
        """A number that grows on every register / alias / traffic change: servers poll it
        cheaply and reload only when it moved."""
        with self.db.connect() as conn:
            return int(conn.execute("SELECT value FROM generation").one()[0])

    # -- internals
    def _scored(self, conn: Connection, name: str, version: int) -> Scored:
        row = conn.execute(
            "SELECT primary_metric, metrics FROM versions WHERE model = ? AND version = ?",
            (name, version),
        ).one()
        return Scored(version, row["primary_metric"], orjson.loads(row["metrics"]))

    def _resolve(self, conn: Connection, name: str, version: int | str) -> int:
        """A version number or alias name -> an existing version number."""
        numbers = self._resolve_model(conn, name)
        if isinstance(version, str) and not version.isdigit():
            return self._alias(conn, name, version)
        number = int(version)
        if number not in numbers:
            raise RegistryError(
                f"model {name!r} has no version {number} ({self._describe(conn, name)})"
            )
        return number

    def _resolve_model(self, conn: Connection, name: str) -> list[int]:
        numbers = [
            int(r[0])
            for r in conn.execute(
                "SELECT version FROM versions WHERE model = ? ORDER BY version", (name,)
            )
        ]
        if not numbers:
            self._unknown_model(conn, name)
        return numbers

    def _unknown_model(self, conn: Connection, name: str) -> None:
        known = [r[0] for r in conn.execute("SELECT DISTINCT model FROM versions ORDER BY 1")]
        raise RegistryError(
            f"unknown model {name!r} (registered: {', '.join(known) or 'none'} in {self.root}); "
            "train one with `fstore train`"
        )

    def _alias(self, conn: Connection, name: str, alias: str) -> int:
        self._resolve_model(conn, name)
        number = self._aliases(conn, name).get(alias)
        if number is None:
            raise RegistryError(
                f"model {name!r} has no alias {alias!r} ({self._describe(conn, name)})"
            )
        return number

    def _aliases(self, conn: Connection, name: str) -> dict[str, int]:
        rows = conn.execute(
            "SELECT alias, version FROM aliases WHERE model = ? ORDER BY alias", (name,)
        )
        return {str(alias): int(number) for alias, number in rows}

    def _traffic(self, conn: Connection, name: str, default: bool) -> dict[str, float]:
        rows = conn.execute(
            "SELECT alias, weight FROM traffic WHERE model = ? ORDER BY alias", (name,)
        ).fetchall()
        if not rows and default:
            return {PRODUCTION: 1.0}
        return {str(alias): float(weight) for alias, weight in rows}

    def _describe(self, conn: Connection, name: str) -> str:
        """What a model has, for error messages: "model 'fraud' has versions 1, 2; aliases:
        production -> 2"."""
        numbers = [
            str(r[0])
            for r in conn.execute(
                "SELECT version FROM versions WHERE model = ? ORDER BY version", (name,)
            )
        ]
        aliases = ", ".join(f"{a} -> {v}" for a, v in self._aliases(conn, name).items())
        return (
            f"model {name!r} has versions {', '.join(numbers) or 'none'}; "
            f"aliases: {aliases or 'none'}"
        )

    def _audit(
        self,
        conn: Connection,
        name: str,
        who: str,
        action: str,
        alias: str | None,
        from_version: int | None,
        to_version: int | None,
        reason: str,
        detail: dict[str, Any],
    ) -> AuditEntry:
        """Append to the history and bump the generation, in the caller's transaction."""
        (entry_id,) = conn.execute(
            "INSERT INTO audit (model, at, who, action, alias, from_version, to_version, "
            "reason, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                name,
                datetime.now(UTC).isoformat(),
                who,
                action,
                alias,
                from_version,
                to_version,
                reason,
                to_json(detail),
            ),
        ).one()
        conn.execute("UPDATE generation SET value = value + 1")
        row = conn.execute(f"{AUDIT_ROWS} WHERE id = ?", (entry_id,)).one()
        return entry_from_row(row)


def _weights_text(weights: dict[str, float]) -> str:
    return ", ".join(f"{alias}={weight:.0%}" for alias, weight in weights.items())


def _finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        number = float(value)
        if not math.isfinite(number):
            raise RegistryError(f"metric {key!r} is {value}; metrics must be finite numbers")
        clean[key] = number
    return clean


def _objective(objective: Objective | str) -> Objective:
    try:
        return Objective(objective)
    except ValueError:
        raise RegistryError(
            f"objective {objective!r} is not one of {', '.join(o.value for o in Objective)}"
        ) from None


def _check_who(who: str) -> None:
    if not who.strip():
        raise RegistryError("who is empty; every change names the person or service making it")


def _libraries() -> dict[str, str]:
    found = {"python": python_version()}
    for package in ("lightgbm", "fstore", "numpy"):
        try:
            found[package] = package_version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
