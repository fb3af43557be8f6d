"""Packaging hygiene, read from pyproject.toml: an SPDX license with its text shipped, a typed
marker in every package, the package data the product reads at run time, and a changelog that
names the version being built."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_expression_and_its_text_ships() -> None:
    project = PROJECT["project"]
    assert project["license"] == "Apache-2.0"  # a string: the TOML table is deprecated
    assert PROJECT["build-system"]["requires"][0] == "setuptools>=77"  # PEP 639 support
    for name in project["license-files"]:
        assert (ROOT / name).read_text().lstrip().startswith("Apache License")
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))


def test_every_package_ships_its_typed_marker() -> None:
    data = PROJECT["tool"]["setuptools"]["package-data"]
    for package in PROJECT["tool"]["mypy"]["packages"]:
        assert (ROOT / package / "py.typed").exists(), package
        assert "py.typed" in data[package], package


def test_the_files_read_at_run_time_are_package_data() -> None:
    data = PROJECT["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        folder = ROOT / package
        files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        for pattern in patterns:
            assert any(fnmatch(f, pattern) for f in files), f"{package}: {pattern} matches nothing"
    templates = ROOT / "featurestore" / "templates"
    for file in templates.rglob("*"):
        if file.is_file() and "__pycache__" not in file.parts:
            relative = file.relative_to(ROOT / "featurestore").as_posix()
            assert any(fnmatch(relative, p) for p in data["featurestore"]), relative


def test_the_changelog_names_the_version() -> None:
    headings = [
        line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")
    ]
    assert headings and headings[0].startswith(f"## {PROJECT['project']['version']} ")
