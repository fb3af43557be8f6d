"""docker-compose.yml stays valid for users with Docker, and only runs commands the CLI has."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from featurestore.cli import _load_plugins, app

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def _cli_commands() -> set[tuple[str, ...]]:
    _load_plugins()
    root = get_command(app)
    names: set[tuple[str, ...]] = set()
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        names.add((name,))
        for sub in getattr(command, "commands", {}):
            names.add((name, sub))
    return names


def test_services_and_their_commands_exist() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "server", "demo"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    commands = _cli_commands()
    for name in ("worker", "server", "demo"):
        argv = services[name]["command"]
        assert argv[0] == "fstore", name
        assert tuple(argv[1:3]) in commands or tuple(argv[1:2]) in commands, argv


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="no docker compose client here")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
