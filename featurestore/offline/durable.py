"""Writes that survive a crash: a temp file (or folder) beside the target, fsync, rename, fsync
of the folder — and the rule for when a leftover temp entry is an orphan to delete.

A temp name carries its writer (`<stem>.<host>.<pid>.tmp`), so a cleanup never deletes what a
live process is still writing: on this host an entry is an orphan when its writer's process is
gone (or, for this very process, when it is not writing it now); from another host, which we
cannot ask, when it has been untouched for `FOREIGN_ORPHAN_AGE_S`. A pid reused by an unrelated
process keeps its orphans until that process ends — space, never data.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = [
    "FOREIGN_ORPHAN_AGE_S",
    "TEMP_SUFFIX",
    "commit",
    "fsync_dir",
    "is_orphan",
    "make_dirs",
    "publish",
    "remove_orphans",
    "temp_beside",
    "temp_entry",
]

log = logging.getLogger("fstore.offline")

TEMP_SUFFIX = ".tmp"
FOREIGN_ORPHAN_AGE_S = 24 * 3600.0
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"
_writing: set[str] = set()  # names of this process's temp entries in progress (unique)
_lock = threading.Lock()


def temp_beside(target: Path) -> Path:
    """A fresh temp path in `target`'s folder, named for this process (see `is_orphan`)."""
    return target.with_name(f".{uuid.uuid4().hex}.{_HOST}.{os.getpid()}{TEMP_SUFFIX}")


@contextmanager
def temp_entry(beside: Path) -> Iterator[Path]:
    """A temp path in `beside`'s folder, known as in progress while the block runs, and gone
    after it unless it was published (renamed) meanwhile."""
    temp = temp_beside(beside)
    with _lock:
        _writing.add(temp.name)
    try:
        yield temp
    finally:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):
                temp.unlink()
        with _lock:
            _writing.discard(temp.name)


def publish(temp: Path, target: Path) -> None:
    """fsync `temp` (a file, or a folder and its files), rename it to `target`, fsync the folder.

    A folder target must not exist (or be empty): `os.rename` refuses a non-empty one with
    OSError, so two creators never overwrite each other.
    """
    _fsync_tree(temp)
    os.rename(temp, target)
    fsync_dir(target.parent)


@contextmanager
def commit(target: Path) -> Iterator[Path]:
    """Yield a temp path to write `target` at; when the block succeeds it is published there,
    when it fails it is removed.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with commit(Path(d) / "a.txt") as tmp:
    ...         _ = tmp.write_text("hello")
    ...     sorted(p.name for p in Path(d).iterdir())
    ['a.txt']
    """
    with temp_entry(target) as temp:
        yield temp
        publish(temp, target)


def make_dirs(directory: Path) -> None:
    """`mkdir -p`, with each new folder's entry made durable in its parent."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def fsync_dir(directory: Path) -> None:
    """Make the folder's entries (a rename, a new or removed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_orphan(path: Path, now: float | None = None) -> bool:
    """Whether a temp entry was left by a writer that is gone (see the module docstring)."""
    parts = path.name.split(".")
    # Named `.<hex>.<host>.<pid>.tmp`; older ones `<hex>.tmp` (no writer known: age decides).
    if len(parts) == 5 and parts[2] == _HOST and parts[3].isdigit():
        pid = int(parts[3])
        if pid == os.getpid():
            with _lock:
                return path.name not in _writing
        return not _alive(pid)
    try:
        age = (now if now is not None else time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > FOREIGN_ORPHAN_AGE_S


def remove_orphans(directory: Path, pattern: str = f"*{TEMP_SUFFIX}") -> list[Path]:
    """Delete the orphan temp entries matching `pattern` under `directory` (a glob)."""
    removed = []
    for path in directory.glob(pattern):
        if not path.name.endswith(TEMP_SUFFIX) or not is_orphan(path):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
        log.warning("removed %s, left by a write that never finished", path)
    for parent in {p.parent for p in removed}:
        fsync_dir(parent)
    return removed


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            _fsync_tree(child)
        fsync_dir(path)
        return
    # fsync through a read-only descriptor flushes the file's data all the same (POSIX).
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
