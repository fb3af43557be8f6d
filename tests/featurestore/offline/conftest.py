"""The offline tests run on both homes of the log: a local folder and a real S3 server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from featurestore.config import OfflineSettings

OfflineConfig = Callable[[str], OfflineSettings]


@pytest.fixture(params=["local", "s3"])
def offline_config(request: pytest.FixtureRequest, tmp_path: Path) -> OfflineConfig:
    """`offline_config(name)`: settings of a fresh, empty offline root named `name` in this
    test — a folder under tmp_path, or a prefix of its own on the session's S3 server."""
    if request.param == "local":
        return lambda name: OfflineSettings(root=tmp_path / name)
    s3 = request.getfixturevalue("s3")
    return lambda name: s3.settings()
