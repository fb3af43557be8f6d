"""Unreadable log files leave the log for a quarantine folder, so one bad file never stops the
training sets, verify and backfill of its view.

Nothing is checked on the happy path: a query runs as it always did, and only when DuckDB fails
are the files it names examined (their Parquet footer, the log's own columns, every page). When
it names no bad file, every file of the view versions read is examined: its footer, and its schema
against the one most of the log's rows have (a file lacking one of those columns, or holding it
with another type, is what DuckDB cannot read with the others). A bad file is moved, never
deleted, to `<root>/_quarantine/<its path under root>` with a warning, and the query runs again
without it. On an object store the move is a copy then a delete of the original: a crash between
the two leaves the file in the log, where the next failing read quarantines it again (the copy
beside it keeps both).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import pyarrow as pa

from featurestore.offline.storage import LogStorage

__all__ = [
    "QUARANTINE",
    "Quarantined",
    "file_problem",
    "named_files",
    "quarantined_total",
    "sweep",
]

log = logging.getLogger("fstore.offline")

QUARANTINE = "_quarantine"
_QUOTED = re.compile(r"""['"]([^'"]+\.parquet)['"]""")
_moved = 0
_lock = threading.Lock()


@dataclass(frozen=True)
class Quarantined:
    """A log file moved out of the log, where it went, and why."""

    path: PurePath
    moved_to: PurePath
    reason: str

    def __str__(self) -> str:
        return f"{self.path} -> {self.moved_to} ({self.reason})"


def quarantined_total() -> int:
    """Files this process moved to quarantine (for a metrics counter)."""
    return _moved


def named_files(message: str, directories: Sequence[PurePath]) -> list[PurePath]:
    """The files of these log folders that an error message names (DuckDB and pyarrow quote
    them: a local path, or an object's `bucket/key`)."""
    found: list[PurePath] = []
    for text in _QUOTED.findall(message):
        for directory in directories:
            if isinstance(directory, Path):
                path: PurePath = Path(text)
                inside = Path(text).resolve().is_relative_to(directory.resolve())
            else:
                path = type(directory)(text.removeprefix("s3://"))
                inside = path.is_relative_to(directory)
            if inside and path not in found:
                found.append(path)
    return found


def file_problem(
    storage: LogStorage, path: PurePath, required: Iterable[str], deep: bool = False
) -> str | None:
    """Why a log file cannot be read (its footer, a column every log file has, and with `deep`
    every page), or None."""
    try:
        parquet = storage.parquet(path)
        missing = [c for c in required if c not in parquet.schema_arrow.names]
        if missing:
            return f"lacks the log columns {missing}"
        if deep:
            for _batch in parquet.iter_batches():
                pass
    except FileNotFoundError:
        return None  # gone already: compacted or quarantined by another process
    except (OSError, pa.ArrowException) as exc:
        if storage.unreachable(exc):  # the store is down: no verdict on the file
            raise storage.error(f"reading {storage.uri(path)}", exc) from exc
        return f"not a readable Parquet file: {exc}"
    return None


def sweep(
    storage: LogStorage,
    directories: Sequence[PurePath],
    named: Sequence[PurePath],
    required: Sequence[str],
) -> tuple[list[Quarantined], bool]:
    """Quarantine the bad files among `named`, else among every file of `directories`.

    Returns the files moved and whether anything changed (a file moved by another process
    counts: the query that failed may succeed now).
    """
    moved: list[Quarantined] = []
    changed = False
    for path in named:
        problem = file_problem(storage, path, required, deep=True)
        if problem is not None:
            done = _move(storage, path, problem)
            changed = True
            if done is not None:
                moved.append(done)
    if changed:
        return moved, changed
    schemas: dict[PurePath, dict[str, str]] = {}
    rows: Counter[tuple[tuple[str, str], ...]] = Counter()
    for directory in directories:
        for path in storage.glob(directory):
            problem = file_problem(storage, path, required)
            if problem is not None:
                done = _move(storage, path, problem)
                changed = True
                if done is not None:
                    moved.append(done)
                continue
            try:
                parquet = storage.parquet(path)
            except FileNotFoundError:
                changed = True
                continue
            columns = {f.name: str(f.type) for f in parquet.schema_arrow}
            schemas[path] = columns
            rows[tuple(sorted(columns.items()))] += parquet.metadata.num_rows + 1
    if not rows:
        return moved, changed
    # The schema of most rows (each file counts one more, so empty files count; ties by name).
    usual = dict(max(rows.items(), key=lambda item: (item[1], item[0]))[0])
    for path, columns in schemas.items():
        differs = sorted(c for c, kind in usual.items() if columns.get(c) != kind)
        if differs:
            reason = f"columns {differs} missing or of another type than the log's {usual}"
            done = _move(storage, path, reason)
            changed = True
            if done is not None:
                moved.append(done)
    return moved, changed


def _move(storage: LogStorage, path: PurePath, reason: str) -> Quarantined | None:
    """Move `path` (under the root) to the quarantine folder, keeping its path under root."""
    global _moved  # one process-wide counter, read by metrics
    root = storage.root
    if isinstance(path, Path) and isinstance(root, Path):
        relative: PurePath = path.resolve().relative_to(root.resolve())
    else:
        relative = path.relative_to(root)
    target = root / QUARANTINE / relative
    suffix = 0
    while storage.exists(target):  # quarantined before under the same name: keep both
        suffix += 1
        target = target.with_name(f"{relative.stem}.{suffix}{relative.suffix}")
    if not storage.move(path, target):
        return None  # another process moved or compacted it first
    with _lock:
        _moved += 1
    log.warning(
        "offline log: moved unreadable %s to %s (%s); queries go on without its rows",
        storage.uri(path),
        storage.uri(target),
        reason,
    )
    return Quarantined(path, target, reason)
