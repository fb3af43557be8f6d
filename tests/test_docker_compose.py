"""docker-compose.yml stays valid for users with Docker, and only runs commands the CLI has,
with options those commands take."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from featurestore.cli import _load_plugins, app
from featurestore.scaffold import template_dir

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
STACK = {"kafka", "redis", "apply", "worker", "monitor", "server", "demo"}


def _cli() -> Any:
    """The root command (Typer's own click: groups have `commands`, commands `params`)."""
    _load_plugins()
    return get_command(app)


def _resolve(root: Any, argv: list[str]) -> tuple[Any, list[str]]:
    """The (sub)command `argv` runs, and the arguments left for it."""
    command, rest = root, list(argv)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        found = command.commands.get(rest[0])
        assert found is not None, f"`fstore {' '.join(argv)}`: no command {rest[0]!r}"
        command, rest = found, rest[1:]
    return command, rest


def _services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_the_full_stack_is_there() -> None:
    services = _services()
    assert set(services) >= STACK
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_every_fstore_service_runs_a_command_the_cli_has_with_options_it_takes() -> None:
    root = _cli()
    fstore_services = {
        name: service["command"]
        for name, service in _services().items()
        if service.get("command", [None])[0] == "fstore"
    }
    assert set(fstore_services) == STACK - {"kafka", "redis"}
    for name, argv in fstore_services.items():
        command, rest = _resolve(root, argv[1:])
        assert not hasattr(command, "commands"), f"{name}: `{' '.join(argv)}` is a group"
        options = {opt for param in command.params for opt in param.opts}
        for token in rest:
            if token.startswith("--"):
                assert token.split("=")[0] in options, f"{name}: `fstore {argv[1]}` has no {token}"


def test_the_expected_commands_run() -> None:
    services = _services()
    assert services["worker"]["command"][:2] == ["fstore", "ingest"]
    assert services["monitor"]["command"][:2] == ["fstore", "monitor"]
    assert services["server"]["command"][:4] == ["fstore", "serve", "--host", "0.0.0.0"]  # noqa: S104
    assert services["demo"]["command"][:2] == ["fstore", "demo"]
    assert services["apply"]["command"] == ["fstore", "apply", "/repo"]


def test_the_stack_waits_for_its_feature_repo_and_mounts_it() -> None:
    services = _services()
    for name in ("worker", "monitor", "server"):
        condition = services[name]["depends_on"]["apply"]["condition"]
        assert condition == "service_completed_successfully", name
    mount = next(v for v in services["apply"]["volumes"] if v.endswith(":/repo:ro"))
    assert (ROOT / mount.split(":")[0]).resolve() == template_dir("fraud")


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


def test_redis_keeps_its_data_in_an_append_only_file_on_a_volume() -> None:
    """A restarted container keeps the online state; without it the workers would rebuild it
    from the offline log (featurestore/writer.py)."""
    compose = yaml.safe_load(COMPOSE.read_text())
    redis = compose["services"]["redis"]
    command = redis["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    [volume] = [v for v in redis["volumes"] if v.endswith(":/data")]
    assert volume.split(":")[0] in compose["volumes"]
