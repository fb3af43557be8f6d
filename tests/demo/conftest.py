"""The product as a user installs it: the sdist and wheel built from this checkout, the wheel
installed into a fresh virtualenv in a temp folder, with nothing of the checkout on its path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_PIP_TO_UV = {
    "PIP_INDEX_URL": "UV_DEFAULT_INDEX",
    "PIP_EXTRA_INDEX_URL": "UV_INDEX",
    "PIP_FIND_LINKS": "UV_FIND_LINKS",
    "PIP_CERT": "SSL_CERT_FILE",
}


def _uv(*args: str) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is missing: pip install -e '.[dev]'"
    # uv reads UV_* only: a pip index or mirror the machine is set up with applies to it too.
    env = dict(os.environ)
    for pip, uv_name in _PIP_TO_UV.items():
        if pip in env and uv_name not in env:
            env[uv_name] = env[pip]
    done = subprocess.run(
        [uv, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"uv {' '.join(args)}:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin` folder of a fresh virtualenv holding only the wheel and its dependencies.

    `uv build` makes the sdist and builds the wheel from it (as a release does: no stale
    `build/` of the checkout can slip in); uv installs it from its cache in seconds.
    """
    root = tmp_path_factory.mktemp("wheel")
    began = time.monotonic()
    _uv("build", "--quiet", "-o", str(root / "dist"), str(ROOT))
    built = time.monotonic()
    venv = root / "venv"
    _uv("venv", "--quiet", "--python", sys.executable, str(venv))
    (wheel,) = (root / "dist").glob("fstore-*.whl")
    _uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel))
    print(
        f"wheel built in {built - began:.1f}s, installed into a fresh venv in "
        f"{time.monotonic() - built:.1f}s"
    )
    return venv / "bin"


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no FSTORE_* of the test run, no checkout on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_") and k != "PYTHONPATH"}
    return env | extra
