"""The command line every benchmark shares (--wait-quiet, --seed, --tmp, --keep) and the
working folder that --tmp and --keep describe."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _report import log

__all__ = ["add_common_arguments", "working_folder"]


def add_common_arguments(parser: argparse.ArgumentParser, files: bool = True) -> None:
    """--wait-quiet and --seed, and with `files` --tmp and --keep."""
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measurement wait up to this long for the machine to be idle",
    )
    if files:
        parser.add_argument("--tmp", type=Path, help="where the run's files go (default: TMPDIR)")
        parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--seed", type=int, default=42)


@contextmanager
def working_folder(prefix: str, tmp: Path | None = None, keep: bool = False) -> Iterator[Path]:
    """A fresh folder under `tmp` (default: TMPDIR) for the run's files, removed when the run
    ends however it ends, unless `keep` (then its path is logged)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp))
    try:
        yield work
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
