"""Versioned training datasets: rows, the entity rows that made them, and a manifest.

Layout: `<offline root>/_datasets/<name>/v<version>/` holding `data.parquet`, `entities.parquet`
and `manifest.json`. On a local root a version is built in a temp folder beside it and renamed
into place whole, so a create that dies leaves no version behind, only a temp folder that the
next create of that name removes once its writer is gone (featurestore.offline.durable).
On an object store (no rename) a version is built in a local temp folder; the creator claims the
next version by writing `v<N>/claims/<its id>` and listing the claims: it owns `v<N>` only when
its claim is alone (of two racing creators the later lister sees both claims and moves on; when
both see both, both move on). The owner uploads the rows and entity rows, then the manifest last:
a version counts only once its manifest exists, so a create that dies leaves no version behind.
Feature refs are pinned to the view versions they resolved to, so re-creating a dataset from its
manifest computes exactly the same rows; the content hash proves it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from featurestore.errors import RequestError
from featurestore.offline.durable import TEMP_SUFFIX, make_dirs, publish, remove_orphans, temp_entry
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.offline.on_demand import historical_with_on_demand
from featurestore.registry import FeaturePlan, RegisteredView
from featurestore.timestamps import from_us

__all__ = [
    "MANIFEST",
    "Dataset",
    "DatasetStore",
    "check_name",
    "content_hash",
]

MANIFEST = "manifest.json"
_HASH_BATCH = 65_536
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_DIR = re.compile(r"v([0-9]+)")


@dataclass(frozen=True)
class Dataset:
    name: str
    version: int
    path: PurePath  # the rows, a Parquet file (on `filesystem`: local, or an S3 `bucket/key`)
    manifest: dict[str, Any]
    filesystem: pafs.FileSystem | None = None  # None: a local file

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def read(self) -> pa.Table:
        """The dataset's rows."""
        return pq.read_table(str(self.path), filesystem=self.filesystem)

    def read_entities(self) -> pa.Table:
        """The entity rows it was built from."""
        return pq.read_table(str(self.path.parent / "entities.parquet"), filesystem=self.filesystem)

    def content_hash(self) -> str:
        return content_hash(self.path, self.filesystem)


class DatasetStore:
    def __init__(self, offline: OfflineStore) -> None:
        self.offline = offline
        self.storage = offline.storage
        self.root = offline.root / "_datasets"

    def create(
        self,
        name: str,
        entity_rows: Any,
        resolved: list[tuple[RegisteredView, str]] | FeaturePlan,
        service: str | None = None,
        timestamp_column: str = "event_timestamp",
    ) -> Dataset:
        """A new version of dataset `name`. `resolved` is a list of view features, or a plan
        that may hold on-demand features too (computed over the whole set, in memory)."""
        plan = resolved if isinstance(resolved, FeaturePlan) else None
        if plan is not None:
            resolved = list(plan.views.values())
        assert not isinstance(resolved, FeaturePlan)  # noqa: S101 - narrowed above
        folder = self.root / check_name(name)
        with self._build_folder(folder) as build:
            entities = build / "entities.parquet"
            _copy_entity_rows(entity_rows, entities)
            refs = [f"{r.name}@{r.version}:{feature}" for r, feature in resolved]
            on_demand: dict[str, Any] = {}
            query = HistoricalQuery(
                self.offline,
                entities,
                resolved,
                timestamp_column=timestamp_column,
                full_feature_names=True,
            )
            if plan is not None and plan.has_on_demand:
                refs = [asked.key for asked in plan.asked]
                table = historical_with_on_demand(
                    self.offline, entities, plan, timestamp_column, full_feature_names=True
                )
                pq.write_table(table, build / "data.parquet")
                data = build / "data.parquet"
                on_demand = {
                    r.name: {"version": r.version, "fingerprint": r.fingerprint}
                    for r in plan.on_demand.values()
                }
            else:
                data = query.to_parquet(build / "data.parquet")
            first, last, rows = query.con.execute(
                "SELECT min(__t), max(__t), count(*) FROM labels"
            ).fetchone() or (None, None, 0)
            manifest = {
                "name": name,
                "version": 0,  # set when it is published
                "created_at": datetime.now(UTC).isoformat(),
                "features": refs,
                "service": service,
                "views": {
                    r.name: {"version": r.version, "fingerprint": r.fingerprint}
                    for r, _ in resolved
                },
                "on_demand": on_demand,
                "timestamp_column": timestamp_column,
                "entity_rows_hash": content_hash(entities),
                "time_range": [_iso(first), _iso(last)],
                "row_count": rows,
                "content_hash": content_hash(data),
                "libraries": {p: package_version(p) for p in ("fstore", "duckdb", "pyarrow")},
                "quarantined": [str(q.path) for q in query.quarantined],
            }
            if self.storage.local:
                version = self._publish(Path(folder), build, manifest)
            else:
                version = self._upload(folder, build, manifest)
        return self._dataset(name, version, manifest)

    def _dataset(self, name: str, version: int, manifest: dict[str, Any]) -> Dataset:
        path = self.root / name / f"v{version}" / "data.parquet"
        filesystem = None if self.storage.local else self.storage.fs
        return Dataset(name, version, path, manifest, filesystem)

    @contextmanager
    def _build_folder(self, folder: PurePath) -> Iterator[Path]:
        """A local folder to build a version in: beside the versions on a local root (to be
        renamed into place), else a temporary one (to be uploaded)."""
        if not self.storage.local:
            with tempfile.TemporaryDirectory(prefix="fstore-dataset-") as build:
                yield Path(build)
            return
        make_dirs(Path(folder))
        remove_orphans(Path(folder), f"*{TEMP_SUFFIX}")  # builds of creates that died
        with temp_entry(Path(folder) / "build") as build:
            build.mkdir()
            yield build

    def _upload(self, folder: PurePath, build: Path, manifest: dict[str, Any]) -> int:
        """Claim the next free `v<N>` on the object store and upload the build there."""
        claim = f"{uuid.uuid4().hex}"
        while True:
            taken = [_VERSION_DIR.fullmatch(d.name) for d in self.storage.subfolders(folder)]
            version = 1 + max((int(m[1]) for m in taken if m), default=0)
            directory = folder / f"v{version}"
            self.storage.write_bytes(directory / "claims" / claim, b"")
            claims = self.storage.children(directory / "claims")
            if [c.name for c in claims] != [claim]:
                time.sleep(random.uniform(0.0, 0.05))  # noqa: S311 - jitter, not a secret
                continue  # another creator claimed it too: try the next version
            for file in ("entities.parquet", "data.parquet"):
                self.storage.upload(build / file, directory / file)
            manifest["version"] = version
            text = json.dumps(manifest, indent=2) + "\n"
            self.storage.write_bytes(directory / MANIFEST, text.encode())  # last: it publishes
            return version

    def _publish(self, folder: Path, build: Path, manifest: dict[str, Any]) -> int:
        """Rename the build into the next free `v<N>`; a concurrent create that took it first
        makes this one the version after."""
        while True:
            version = 1 + max(
                (int(m[1]) for d in folder.iterdir() if (m := _VERSION_DIR.fullmatch(d.name))),
                default=0,
            )
            manifest["version"] = version
            (build / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            try:
                publish(build, folder / f"v{version}")
            except OSError:
                if not (folder / f"v{version}").exists():
                    raise
                continue
            return version

    def get(self, ref: str) -> Dataset:
        """`name` (latest) or `name@version`."""
        name, _, version_text = ref.partition("@")
        versions = self.versions(check_name(name))
        if not versions:
            raise RequestError(f"no dataset named {name!r} under {self.root}")
        if version_text and not version_text.isdigit():
            raise RequestError(f"dataset ref {ref!r}: the version after '@' must be a number")
        version = int(version_text) if version_text else max(versions)
        if version not in versions:
            raise RequestError(f"dataset {name!r} has versions {versions}, not {version}")
        directory = self.root / name / f"v{version}"
        manifest = json.loads(self.storage.read_bytes(directory / MANIFEST))
        return self._dataset(name, version, manifest)

    def all(self) -> list[Dataset]:
        return [
            self.get(f"{d.name}@{v}")
            for d in self.storage.subfolders(self.root)
            if _NAME.fullmatch(d.name)
            for v in self.versions(d.name)
        ]

    def versions(self, name: str) -> list[int]:
        return sorted(
            int(m[1])
            for d in self.storage.subfolders(self.root / name)
            if (m := _VERSION_DIR.fullmatch(d.name)) and self.storage.exists(d / MANIFEST)
        )


def check_name(name: str) -> str:
    """`name` when it is a valid dataset name (it becomes a folder), else a RequestError.

    >>> check_name("fraud-train.v2")
    'fraud-train.v2'
    >>> check_name("../etc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    featurestore.errors.RequestError: dataset name '../etc' is not allowed: ...
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise RequestError(
            f"dataset name {name!r} is not allowed: use 1 to 128 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit (no path separators, no '..')"
        )
    return name


def content_hash(path: PurePath, filesystem: pafs.FileSystem | None = None) -> str:
    """SHA-256 of a Parquet file's logical content (schema and rows), not of its bytes."""
    digest = hashlib.sha256()
    parquet = pq.ParquetFile(str(path), filesystem=filesystem)
    digest.update(parquet.schema_arrow.serialize())
    for batch in parquet.iter_batches(batch_size=_HASH_BATCH):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        digest.update(sink.getvalue())
    return digest.hexdigest()


def _copy_entity_rows(entity_rows: Any, target: Path) -> None:
    if isinstance(entity_rows, str | Path):
        table = pq.read_table(entity_rows)
    elif isinstance(entity_rows, pa.Table):
        table = entity_rows
    elif hasattr(entity_rows, "columns") and hasattr(entity_rows, "to_numpy"):
        table = pa.Table.from_pandas(entity_rows, preserve_index=False)
    else:
        raise RequestError(
            "entity rows must be a pandas DataFrame, a pyarrow Table or a Parquet path, "
            f"not {type(entity_rows).__name__}"
        )
    pq.write_table(table, target)


def _iso(us: int | None) -> str | None:
    return None if us is None else from_us(us).isoformat()
