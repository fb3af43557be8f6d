"""Model artifacts on disk: written whole or not at all.

A serving replica on a shared volume may read `v<N>/model.txt` at any moment, so the file
appears by an atomic rename of a complete, fsynced temporary file — never half-written.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from featurestore.errors import RegistryError

__all__ = ["ARTIFACT_NAME", "write_atomically"]

ARTIFACT_NAME = "model.txt"


def write_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a temporary file in the same folder and a rename."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RegistryError(f"cannot write the model artifact {target}: {exc}") from exc
