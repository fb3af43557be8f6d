"""The feature registry's audit: who applied or removed what, in the change's own transaction;
a file of the previous schema gains the table on open; `fstore history` shows it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featurestore import cli
from featurestore.actor import default_who
from featurestore.config import RegistrySettings
from featurestore.errors import RegistryError
from featurestore.registry import DB_FILE_NAME, SCHEMA_VERSION, Registry
from featurestore.repo import RepoContents
from tests.featurestore.test_registry import build_view


def test_changes_are_audited_with_who_and_unchanged_ones_are_not(
    tmp_path: Path, registry_url: str | None
) -> None:
    registry = Registry(RegistrySettings(path=tmp_path, url=registry_url))
    view = build_view("v", windows="10m")
    registry.apply(RepoContents(views={"v": view}), who="alice")
    registry.apply(RepoContents(views={"v": view}), who="bob")  # nothing changes
    registry.apply(RepoContents(views={"v": build_view("v", windows="20m")}), who="bob")
    registry.remove_view("v", 1, who="carol")
    history = registry.history()
    assert [r.id for r in history] == list(range(1, len(history) + 1))
    assert [(r.who, r.action, r.name, r.version, r.detail) for r in history[-3:]] == [
        ("alice", "apply", "v", 1, "created"),
        ("bob", "apply", "v", 2, "updated"),
        ("carol", "remove", "v", 1, "removed"),
    ]
    assert {r.who for r in registry.history()} == {"alice", "bob", "carol"}  # entity, source too


def test_a_refused_change_leaves_no_audit_row(tmp_path: Path, registry_url: str | None) -> None:
    registry = Registry(RegistrySettings(path=tmp_path, url=registry_url))
    registry.apply(RepoContents(views={"v": build_view("v", windows="10m")}))
    before = registry.history()
    try:
        registry.remove_view("v", 9)
    except RegistryError:
        pass
    else:
        raise AssertionError("removing a version that does not exist must fail")
    assert registry.history() == before
    assert before[-1].who == default_who()  # no who given: the login name


def test_a_previous_schema_file_gains_the_audit_table(tmp_path: Path) -> None:
    registry = Registry(RegistrySettings(path=tmp_path))
    registry.apply(RepoContents(views={"v": build_view("v", windows="10m")}))
    with sqlite3.connect(tmp_path / DB_FILE_NAME) as conn:  # as the previous fstore left it
        conn.execute("DROP TABLE registry_audit")
        conn.execute("PRAGMA user_version = 1")
    reopened = Registry(RegistrySettings(path=tmp_path))
    assert reopened.get_view("v").version == 1 and reopened.history() == []
    reopened.remove_view("v", 1, who="dave")
    assert [r.who for r in reopened.history()] == ["dave"]
    with sqlite3.connect(tmp_path / DB_FILE_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_the_audit_refuses_rewrites(tmp_path: Path, registry_url: str | None) -> None:
    registry = Registry(RegistrySettings(path=tmp_path, url=registry_url))
    registry.apply(RepoContents(views={"v": build_view("v", windows="10m")}), who="alice")
    for rewrite in ("UPDATE registry_audit SET who = 'mallory'", "DELETE FROM registry_audit"):
        with pytest.raises(RegistryError, match="append-only"), registry.db.transaction() as conn:
            conn.execute(rewrite)
    assert {r.who for r in registry.history()} == {"alice"}


def test_fstore_history_shows_the_audit(tmp_path: Path) -> None:
    Registry(RegistrySettings(path=tmp_path)).apply(
        RepoContents(views={"v": build_view("v", windows="10m")}), who="erin"
    )
    result = CliRunner().invoke(
        cli.app, ["history"], env={"FSTORE_REGISTRY_PATH": str(tmp_path), "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "erin" in result.output and "created" in result.output
