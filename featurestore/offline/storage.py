"""Where the offline root's files live: a local folder or an S3-compatible bucket, through one
set of verbs (list, read, write once, move, remove) on a pyarrow filesystem.

Local: a file appears by rename (featurestore.offline.durable). An object store has no rename:
an object appears whole when its upload completes — one PUT, or a multipart upload that no
listing shows until it is completed. So a write builds the file in a local temp file first and
then uploads it under its final, write-once name (a fresh uuid, never reused): a writer that dies
mid-upload leaves at most an incomplete multipart upload (a bucket lifecycle rule reclaims
those), never a visible object. On both, readers take only data names (`*.parquet` not starting
with a dot) and never a temp name (`.<hex>.<host>.<pid>.tmp`).

DuckDB reads local files itself (`read_parquet`); objects reach it as a pyarrow dataset over
`S3FileSystem` that it scans with projection pushdown (DuckDB's own `httpfs` extension is not in
its wheel and `INSTALL httpfs` downloads from the internet).

Errors name the object (`s3://bucket/key`) and never the credentials (`masked`).
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePath, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import SecretStr

from featurestore.config import OfflineSettings
from featurestore.errors import OfflineStoreError
from featurestore.offline.durable import commit, fsync_dir, make_dirs, remove_orphans

__all__ = [
    "LogStorage",
    "is_data_name",
    "s3_filesystem",
    "sql_literal",
]

_COPY_CHUNK = 8 * 1024 * 1024
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_MIN_MASKED_KEY = 12
# How pyarrow words a failure of the store itself (not of one object's content).
_STORE_ERRORS = ("AWS Error", "curlCode", "Couldn't connect", "Connection refused", "timed out")


def is_data_name(name: str) -> bool:
    """Whether a file name is one readers take: a `.parquet` file, not a temp or hidden one.

    >>> [is_data_name(n) for n in ("1f2e.parquet", ".1f2e.host.42.tmp", ".x.parquet")]
    [True, False, False]
    """
    return name.endswith(".parquet") and not name.startswith(".")


def s3_filesystem(config: OfflineSettings, *, create_buckets: bool = False) -> pafs.S3FileSystem:
    """pyarrow's S3 client for an `s3://` offline root, from the settings, else the AWS_*
    environment (pyarrow reads AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ... itself)."""
    options: dict[str, Any] = {
        "connect_timeout": config.s3_timeout_s,
        "request_timeout": config.s3_timeout_s,
        "allow_bucket_creation": create_buckets,
        "allow_bucket_deletion": False,
    }
    if config.s3_endpoint:
        endpoint = config.s3_endpoint
        parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        if not parts.netloc:
            raise OfflineStoreError(
                f"offline.s3_endpoint {config.s3_endpoint!r} names no host; "
                "give it as http://HOST:PORT or https://HOST"
            )
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme or "https"
    if config.s3_region:
        options["region"] = config.s3_region
    if (config.s3_access_key is None) != (config.s3_secret_key is None):
        raise OfflineStoreError(
            "offline.s3_access_key and offline.s3_secret_key go together: set both, or neither "
            "(then the AWS credential chain is used: AWS_ACCESS_KEY_ID, ~/.aws, a role)"
        )
    if config.s3_access_key is not None and config.s3_secret_key is not None:
        options["access_key"] = config.s3_access_key.get_secret_value()
        options["secret_key"] = config.s3_secret_key.get_secret_value()
    return pafs.S3FileSystem(**options)


class LogStorage:
    """The files under an offline root. Paths are `PurePath`s: a local `Path`, or for S3 a
    `PurePosixPath` of `bucket/key` (what pyarrow's S3FileSystem takes)."""

    def __init__(self, config: OfflineSettings) -> None:
        self.config = config
        self.root: PurePath
        self.fs: pafs.FileSystem
        if isinstance(config.root, str):
            self.local = False
            self.root = PurePosixPath(config.root.removeprefix("s3://"))
            self.fs = s3_filesystem(config)
        else:
            self.local = True
            self.root = config.root
            self.fs = pafs.LocalFileSystem()
        # Secrets are masked in every message; an access key id (public-ish, but still not to
        # be shown) only when it is long enough not to mask ordinary words of the message.
        keys = [config.s3_access_key, os.environ.get("AWS_ACCESS_KEY_ID")]
        secrets = [config.s3_secret_key, *map(os.environ.get, _SECRET_VARIABLES)]
        self._secrets = [t for t in map(_text, secrets) if t] + [
            t for t in map(_text, keys) if len(t) >= _MIN_MASKED_KEY
        ]

    # -- naming ------------------------------------------------------------------------------

    def uri(self, path: PurePath) -> str:
        """How messages name a path: the local path, or `s3://bucket/key`."""
        return str(path) if self.local else f"s3://{path}"

    def masked(self, text: str) -> str:
        """`text` with the storage's credentials (settings and AWS_* variables) as ***."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def error(self, doing: str, exc: BaseException) -> OfflineStoreError:
        """An OfflineStoreError saying what failed, where, and why, without credentials."""
        where = self.uri(self.root)
        hint = "" if self.local else " (check offline.s3_endpoint, the bucket and credentials)"
        return OfflineStoreError(self.masked(f"{doing} under {where} failed{hint}: {exc}"))

    def unreachable(self, exc: BaseException) -> bool:
        """Whether an error is the object store's (down, refusing the credentials, timing out)
        rather than a file's: such an error never sends a file to quarantine."""
        if self.local:
            return False
        text = str(exc)
        return any(sign in text for sign in _STORE_ERRORS) and not any(
            sign in text for sign in ("NO_SUCH_KEY", "NoSuchKey", "Path does not exist")
        )

    # -- listing -----------------------------------------------------------------------------

    def glob(self, directory: PurePath, pattern: str = "date=*/*.parquet") -> list[PurePath]:
        """The data files under `directory` whose path below it matches `pattern` (segment by
        segment), sorted; temp and hidden names never."""
        if self.local:
            found: list[PurePath] = [
                p for p in Path(directory).glob(pattern) if is_data_name(p.name) and p.is_file()
            ]
            return sorted(found)
        depth = len(PurePosixPath(pattern).parts)
        selector = pafs.FileSelector(str(directory), recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise self.error(f"listing {self.uri(directory)}", exc) from exc
        out: list[PurePath] = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            path = PurePosixPath(info.path)
            relative = path.relative_to(directory)
            if len(relative.parts) == depth and is_data_name(path.name):
                pairs = zip(relative.parts, PurePosixPath(pattern).parts, strict=True)
                if all(fnmatch.fnmatchcase(part, glob) for part, glob in pairs):
                    out.append(path)
        return sorted(out)

    def children(self, directory: PurePath) -> list[PurePath]:
        """The files directly under `directory`, whatever their names, sorted."""
        if self.local:
            folder = Path(directory)
            return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        selector = pafs.FileSelector(str(directory), recursive=False, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise self.error(f"listing {self.uri(directory)}", exc) from exc
        return sorted(PurePosixPath(i.path) for i in infos if i.type == pafs.FileType.File)

    def exists(self, path: PurePath) -> bool:
        if self.local:
            return Path(path).exists()
        try:
            info = self.fs.get_file_info(str(path))
            return bool(info.type != pafs.FileType.NotFound)
        except OSError as exc:
            raise self.error(f"looking up {self.uri(path)}", exc) from exc

    def subfolders(self, directory: PurePath) -> list[PurePath]:
        """The names one level below `directory` that hold something (folders, or key prefixes)."""
        if self.local:
            folder = Path(directory)
            return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        selector = pafs.FileSelector(str(directory), recursive=False, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise self.error(f"listing {self.uri(directory)}", exc) from exc
        return sorted(PurePosixPath(i.path) for i in infos if i.type == pafs.FileType.Directory)

    # -- reading -----------------------------------------------------------------------------

    def parquet(self, path: PurePath) -> pq.ParquetFile:
        """A Parquet file of the root, opened (FileNotFoundError when it is gone)."""
        if self.local:
            return pq.ParquetFile(path)
        return pq.ParquetFile(str(path), filesystem=self.fs)

    def read_bytes(self, path: PurePath) -> bytes:
        if self.local:
            return Path(path).read_bytes()
        try:
            with self.fs.open_input_stream(str(path)) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self.error(f"reading {self.uri(path)}", exc) from exc

    def define_view(self, con: duckdb.DuckDBPyConnection, name: str, files: list[PurePath]) -> None:
        """A DuckDB view `name` over these Parquet files (the first one's columns)."""
        if self.local:
            listed = ", ".join(sql_literal(p) for p in files)
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * "  # noqa: S608 - quoted paths
                f"FROM read_parquet([{listed}], hive_partitioning = false)"
            )
            return
        dataset = ds.dataset([str(p) for p in files], format="parquet", filesystem=self.fs)
        con.register(f"{name}__objects", dataset)
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {name}__objects"  # noqa: S608
        )

    # -- writing -----------------------------------------------------------------------------

    def make_dirs(self, directory: PurePath) -> None:
        """`mkdir -p` on a local root (durably); nothing on S3, where folders are key prefixes."""
        if self.local:
            make_dirs(Path(directory))

    @contextmanager
    def writing(self, target: PurePath) -> Iterator[Path]:
        """Yield a local temp path to write `target`'s content at; when the block succeeds the
        file appears at `target` whole (a durable rename, or one upload), else nowhere."""
        if self.local:
            with commit(Path(target)) as temp:
                yield temp
            return
        with tempfile.TemporaryDirectory(prefix="fstore-upload-") as folder:
            temp = Path(folder) / target.name
            yield temp
            self.upload(temp, target)

    def upload(self, source: Path, target: PurePath) -> None:
        """Copy a local file to the object `target`, which appears when the upload completes."""
        try:
            with source.open("rb") as data, self.fs.open_output_stream(str(target)) as out:
                while chunk := data.read(_COPY_CHUNK):
                    out.write(chunk)
        except OSError as exc:
            raise self.error(f"uploading {self.uri(target)}", exc) from exc

    def write_bytes(self, target: PurePath, data: bytes) -> None:
        """`data` at `target`, appearing whole (durable rename, or one PUT)."""
        if self.local:
            with commit(Path(target)) as temp:
                temp.write_bytes(data)
            return
        try:
            with self.fs.open_output_stream(str(target)) as out:
                out.write(data)
        except OSError as exc:
            raise self.error(f"writing {self.uri(target)}", exc) from exc

    def remove(self, path: PurePath) -> None:
        """Delete a file; one already gone is fine (another process removed it)."""
        if self.local:
            with suppress(FileNotFoundError):
                Path(path).unlink()
            return
        try:
            self.fs.delete_file(str(path))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self.error(f"deleting {self.uri(path)}", exc) from exc

    def move(self, source: PurePath, target: PurePath) -> bool:
        """Move a file (False when `source` is gone). On S3: copy, then delete the source — a
        crash between the two leaves the source in place, to be moved again."""
        if self.local:
            make_dirs(Path(target).parent)
            try:
                os.rename(source, target)
            except FileNotFoundError:
                return False
            fsync_dir(Path(source).parent)
            fsync_dir(Path(target).parent)
            return True
        try:
            self.fs.copy_file(str(source), str(target))
        except FileNotFoundError:
            return False
        except OSError as exc:
            if not self.exists(source):
                return False
            raise self.error(f"copying {self.uri(source)}", exc) from exc
        self.remove(source)
        return True

    def sync(self, directory: PurePath) -> None:
        """Make a local folder's entries durable (removals, renames); nothing on S3."""
        if self.local:
            fsync_dir(Path(directory))

    def remove_orphans(self, directory: PurePath, pattern: str) -> list[PurePath]:
        """Delete the temp files dead writers left (local). An object store holds none: an
        upload that never completed is not an object."""
        if self.local and Path(directory).exists():
            return list(remove_orphans(Path(directory), pattern))
        return []


def _text(value: SecretStr | str | None) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""


def sql_literal(text: str | PurePath) -> str:
    """A quoted SQL string: every path that goes into DuckDB SQL goes through here."""
    return "'" + str(text).replace("'", "''") + "'"
