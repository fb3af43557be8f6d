"""`fstore init`: every template writes a repo that `fstore apply` registers at once, with its
own Redis namespace; a folder holding files is refused; `fstore --version` reads the metadata."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from featurestore.config import load_settings
from featurestore.errors import InitError
from featurestore.registry import Registry
from featurestore.scaffold import TEMPLATES, init_repo, template_dir

ROOT = Path(__file__).resolve().parents[2]
VIEWS = {"minimal": {"user_txn"}, "fraud": {"user_txn", "merchant_txn"}}
SERVICES = {"minimal": "fraud", "fraud": "fraud_detection"}


def fstore(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: its own process, in the repo's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTORE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    code = "from featurestore.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("template", TEMPLATES)
def test_init_writes_a_repo_that_fstore_apply_accepts_at_once(
    template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fstore("init", "shop-features", "--template", template, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    repo = tmp_path / "shop-features"
    assert sorted(p.name for p in repo.iterdir()) == [
        "README.md",
        "features.py",
        "featurestore.yaml",
    ]
    config = yaml.safe_load((repo / "featurestore.yaml").read_text())
    assert config["redis"]["namespace"] == "shop-features"  # no other repo's keys
    readme = (repo / "README.md").read_text()
    assert readme.startswith("# shop-features\n") and "fstore apply" in readme
    assert "${" not in readme + (repo / "featurestore.yaml").read_text()

    applied = fstore("apply", cwd=repo)
    assert applied.returncode == 0, applied.stdout + applied.stderr

    monkeypatch.chdir(repo)  # its featurestore.yaml: registry under its own data/
    settings = load_settings()
    assert settings.registry.path == repo / "data" / "registry"
    registry = Registry(settings.registry)
    assert {v.name for v in registry.list_views()} == VIEWS[template]
    assert registry.get_service(SERVICES[template]).refs()


def test_the_python_files_are_the_template_s_own(tmp_path: Path) -> None:
    """Definitions are copied as they are: the template folder itself is a loadable repo."""
    init_repo(tmp_path / "r", "fraud")
    shipped = (template_dir("fraud") / "features.py").read_bytes()
    assert (tmp_path / "r" / "features.py").read_bytes() == shipped


def test_a_folder_holding_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InitError, match="already exists and is not empty"):
        init_repo(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    init_repo(tmp_path / "empty-is-fine")


def test_an_unknown_template_says_which_exist(tmp_path: Path) -> None:
    refused = fstore("init", "x", "--template", "nope", cwd=tmp_path)
    assert refused.returncode == 1
    assert "no template 'nope': choose one of minimal, fraud" in refused.stderr
    assert not (tmp_path / "x").exists()


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    shown = fstore("--version", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"fstore {version('fstore')}"
