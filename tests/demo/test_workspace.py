"""The demo's folder: its own, remade each run; any other folder with files is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from demo.errors import DemoError
from demo.options import DemoOptions
from demo.steps import monitor_settings
from demo.workspace import MARKER, Workspace
from featurestore.config import Settings, load_settings


def _create(root: Path, base: Settings | None = None) -> Workspace:
    base = base or Settings(redis={"url": "redis://:s3cret@redis.example:6379/0"})
    return Workspace.create(root, base, monitor_settings(DemoOptions()), 8123, "127.0.0.1")


def test_runs_get_their_own_topics_namespace_and_paths(tmp_path: Path) -> None:
    one = _create(tmp_path / "d")
    two = _create(tmp_path / "d")  # the second run wipes the first one's folder
    assert one.run != two.run
    assert one.topics.transactions.startswith(f"fstore-demo.{one.run}.")
    assert two.settings.redis.namespace == f"fstore-demo-{two.run}"
    assert two.settings.registry.path == (tmp_path / "d" / "registry").resolve()
    assert two.settings.monitor.alerts_topic == two.topics.alerts
    assert two.settings.serving.prediction_log_topic == two.topics.predictions
    assert (tmp_path / "d" / MARKER).exists()


def test_the_config_file_loads_and_keeps_secrets_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = _create(tmp_path / "d")
    text = workspace.config_file.read_text()
    assert "s3cret" not in text
    assert workspace.env()["FSTORE_REDIS_URL"] == "redis://:s3cret@redis.example:6379/0"
    monkeypatch.setenv("FSTORE_CONFIG", str(workspace.config_file))
    loaded = load_settings()
    assert loaded.registry.path == workspace.settings.registry.path
    assert loaded.monitor.window == "5s"
    assert yaml.safe_load(text)["redis"] == {"namespace": workspace.settings.redis.namespace}


def test_the_processes_environment_drops_the_users_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FSTORE_REGISTRY_PATH", "/my/own/registry")
    env = _create(tmp_path / "d").env()
    assert "FSTORE_REGISTRY_PATH" not in env
    assert env["FSTORE_CONFIG"].endswith("featurestore.yaml")


def test_a_folder_with_files_of_someone_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DemoError, match="did not make") as raised:
        _create(tmp_path)
    assert "--data-dir" in raised.value.hint
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_an_empty_folder_is_taken(tmp_path: Path) -> None:
    assert _create(tmp_path).root == tmp_path.resolve()
