from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.config import load_settings
from featurestore.errors import ConfigError


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("FSTORE_CONFIG", "FSTORE_KAFKA_BOOTSTRAP", "FSTORE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_defaults_without_a_file(in_tmp: Path) -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"


def test_yaml_is_read_and_env_overrides_it(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (in_tmp / "featurestore.yaml").write_text(
        "kafka:\n"
        "  bootstrap: broker-a:9092\n"
        "  properties: {security.protocol: SASL_SSL, sasl.mechanism: PLAIN}\n"
        "redis: {url: 'rediss://cache:6380/2'}\n"
        "offline: {root: lake}\n"
        "services: {kafka_port: 19092}\n"
    )
    monkeypatch.setenv("FSTORE_KAFKA_BOOTSTRAP", "broker-b:9093")
    monkeypatch.setenv("FSTORE_SERVICES_REDIS_PORT", "16379")

    settings = load_settings()

    assert settings.kafka.bootstrap == "broker-b:9093"
    assert settings.kafka.client_config(**{"group.id": "g"}) == {
        "bootstrap.servers": "broker-b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "group.id": "g",
    }
    assert settings.redis.url == "rediss://cache:6380/2"
    # Relative paths in the file are relative to the file.
    assert settings.offline.root == in_tmp / "lake"
    assert (settings.services.kafka_port, settings.services.redis_port) == (19092, 16379)


def test_config_path_from_env_and_json_properties(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = in_tmp / "conf" / "prod.yaml"
    config.parent.mkdir()
    config.write_text("registry: {path: ../models}\n")
    monkeypatch.setenv("FSTORE_CONFIG", str(config))
    monkeypatch.setenv("FSTORE_KAFKA_PROPERTIES", '{"ssl.ca.location": "/etc/ca.pem"}')

    settings = load_settings()

    assert settings.registry.path == in_tmp / "models"
    assert settings.kafka.properties == {"ssl.ca.location": "/etc/ca.pem"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: {redis_port: 70000}\n", "services.redis_port"),
        ("kafka: {bootstrap: [1, 2]}\n", "kafka.bootstrap"),
        ("unknown_section: {}\n", "unknown_section"),
        ("- just\n- a list\n", "mapping"),
        ("kafka: {bootstrap: 'a'\n", "not valid YAML"),
    ],
)
def test_invalid_config_names_the_problem(in_tmp: Path, text: str, message: str) -> None:
    (in_tmp / "featurestore.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_missing_explicit_config_file(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSTORE_CONFIG", str(in_tmp / "nope.yaml"))
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_settings()
