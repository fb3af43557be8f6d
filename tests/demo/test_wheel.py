"""The wheel carries what the product reads at run time: the templates of `fstore init` (the
demo's fraud repo among them), the dashboard's files, the typing marker, and its version."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.demo.conftest import user_env

pytestmark = pytest.mark.integration  # builds and installs (uv, PyPI or its cache)


def _run(bin_dir: Path, cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_init_and_apply_from_the_installed_wheel(installed_wheel: Path, tmp_path: Path) -> None:
    assert _run(installed_wheel, tmp_path, "fstore", "--version").strip() == (
        f"fstore {version('fstore')}"
    )
    _run(installed_wheel, tmp_path, "fstore", "init", "fraud-repo", "--template", "fraud")
    applied = _run(installed_wheel, tmp_path / "fraud-repo", "fstore", "apply")
    assert "merchant_txn" in applied and "fraud_detection" in applied


def test_the_installed_package_is_not_the_checkout(installed_wheel: Path, tmp_path: Path) -> None:
    code = (
        "import featurestore, serving, pathlib; "
        "root = pathlib.Path(featurestore.__file__).parent; "
        "print(root); "
        "assert (root / 'py.typed').exists(); "
        "assert (root / 'templates' / 'fraud' / 'features.py').exists(); "
        "assert (pathlib.Path(serving.__file__).parent / 'ui' / 'static' / 'index.html').exists()"
    )
    where = Path(_run(installed_wheel, tmp_path, "python", "-c", code).strip())
    assert where.is_relative_to(installed_wheel.parent), where
