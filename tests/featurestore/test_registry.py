"""Feature repos load into definitions; the registry versions views and resolves feature refs."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from featurestore import cli
from featurestore.config import RedisSettings, RegistrySettings
from featurestore.definitions import Aggregation, Entity, FeatureService, FeatureView, KafkaSource
from featurestore.errors import DefinitionError, RegistryError
from featurestore.online import OnlineStore
from featurestore.registry import DB_FILE_NAME, Registry, Status
from featurestore.repo import FeatureRef, RepoContents, load_repo, parse_ref
from tests.redis_target import client_of

ENTITIES = """\
from featurestore.definitions import Entity, KafkaSource

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(
    name="txns",
    topic="transactions",
    timestamp_field="ts",
    schema={"user_id": "string", "amount": "float64"},
)
"""

VIEWS = """\
from entities import txns, user
from featurestore.definitions import Aggregation, FeatureService, FeatureView

user_txn = FeatureView(
    name="user_txn",
    entities=[user],
    source=txns,
    tile={tile!r},
    description={description!r},
    aggregations=[Aggregation(column="amount", function="sum", windows={windows!r})],
)
fraud = FeatureService(name="fraud", features={features!r})
"""


def write_repo(
    root: Path,
    *,
    windows: tuple[str, ...] = ("10m", "1h"),
    tile: object = "1m",
    description: str = "",
    features: tuple[str, ...] = ("user_txn:amount_sum_10m",),
) -> Path:
    root.mkdir(exist_ok=True)
    (root / "entities.py").write_text(ENTITIES)
    text = VIEWS.format(
        windows=list(windows), tile=tile, description=description, features=list(features)
    )
    (root / "views.py").write_text(text)
    return root


def build_view(
    name: str = "user_txn", topic: str = "transactions", windows: str = "10m"
) -> FeatureView:
    source = KafkaSource(
        name=f"{topic}_source",
        topic=topic,
        timestamp_field="ts",
        schema={"user_id": "string", "amount": "float64"},
    )
    return FeatureView(
        name=name,
        entities=[Entity(name="user", join_keys=["user_id"])],
        source=source,
        aggregations=[Aggregation(column="amount", function="sum", windows=[windows])],
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "repo")


@pytest.fixture
def registry(tmp_path: Path, registry_url: str | None) -> Registry:
    return Registry(RegistrySettings(path=tmp_path / "registry", url=registry_url))


# --- loading a feature repo -------------------------------------------------------------------


def test_load_repo_collects_definitions_across_files(repo: Path) -> None:
    path_before = list(sys.path)

    contents = load_repo(repo)

    assert list(contents.entities) == ["user"]
    assert list(contents.sources) == ["txns"]
    assert list(contents.views) == ["user_txn"]
    assert contents.services["fraud"].refs() == ["user_txn:amount_sum_10m"]
    # views.py imported entities.py: one module, so one object, not a duplicate.
    assert contents.views["user_txn"].entities[0] is contents.entities["user"]
    # Nothing of the repo is left importable, and no bytecode was written beside it.
    assert sys.path == path_before
    files = [str(getattr(module, "__file__", None)) for module in list(sys.modules.values())]
    assert not [file for file in files if file.startswith(str(repo))]
    assert not (repo / "__pycache__").exists()


def test_load_single_file(tmp_path: Path) -> None:
    file = tmp_path / "features.py"
    # Both files in one: the views without their `from entities import ...` line.
    file.write_text(
        ENTITIES
        + VIEWS.split("\n", 1)[1].format(
            windows=["10m"], tile="1m", description="", features=["user_txn:amount_sum_10m"]
        )
    )

    contents = load_repo(file)

    assert list(contents.views) == ["user_txn"]
    assert list(contents.services) == ["fraud"]


def test_reloading_sees_edits(repo: Path) -> None:
    assert load_repo(repo).views["user_txn"].feature_names() == ["amount_sum_10m", "amount_sum_1h"]
    # Same size, same second: a cached .pyc would be trusted here.
    write_repo(repo, windows=("20m", "1h"), features=("user_txn:amount_sum_20m",))
    assert load_repo(repo).views["user_txn"].feature_names() == ["amount_sum_20m", "amount_sum_1h"]


def test_sibling_imported_before_its_turn_runs_once(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "entities.py").write_text(
        ENTITIES
        + 'from pathlib import Path\nPath(__file__).with_name("runs.log").open("a").write("x")\n'
    )
    # Loaded first (sorted by name), it imports entities.py before the loader reaches it.
    (root / "a_views.py").write_text(
        VIEWS.format(windows=["10m"], tile="1m", description="", features=[])
    )

    contents = load_repo(root)

    assert (root / "runs.log").read_text() == "x"
    assert contents.views["user_txn"].source is contents.sources["txns"]


def test_equal_definitions_in_two_files_are_one(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text(ENTITIES)
    (root / "b.py").write_text(ENTITIES)

    assert list(load_repo(root).entities) == ["user"]


def test_different_definitions_with_one_name_name_both_files(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text(ENTITIES)
    (root / "b.py").write_text(ENTITIES.replace('join_keys=["user_id"]', 'join_keys=["uid"]'))

    with pytest.raises(DefinitionError) as caught:
        load_repo(root)

    message = str(caught.value)
    assert "entity 'user' is defined twice, differently" in message
    assert "a.py (variable user)" in message
    assert "b.py (variable user)" in message


def test_a_view_embedding_a_conflicting_source_is_a_duplicate(repo: Path) -> None:
    (repo / "other.py").write_text(
        ENTITIES.replace('"transactions"', '"payments"').replace("user = ", "_user = ")
    )

    with pytest.raises(DefinitionError, match="source 'txns' is defined twice, differently"):
        load_repo(repo)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            ("user_txn:amount_sum_10m", "nope:amount_sum_10m"),
            "feature service 'fraud': 'nope:amount_sum_10m' names an unknown feature view "
            "'nope' (the repo defines: user_txn)",
        ),
        (
            ("user_txn:amount_sum_2h",),
            "feature service 'fraud': feature view 'user_txn' has no feature 'amount_sum_2h' "
            "(it has: amount_sum_10m, amount_sum_1h)",
        ),
        (("user_txn.amount_sum_10m",), "'user_txn.amount_sum_10m' is not a feature reference"),
    ],
)
def test_service_refs_are_checked(tmp_path: Path, features: tuple[str, ...], message: str) -> None:
    repo = write_repo(tmp_path / "repo", features=features)

    with pytest.raises(DefinitionError) as caught:
        load_repo(repo)

    assert message in str(caught.value)


def test_import_errors_name_the_file_line_and_exception(repo: Path) -> None:
    (repo / "views.py").write_text("x = 1\ny = 1 / 0\n")
    with pytest.raises(DefinitionError, match=r"^views\.py:2: ZeroDivisionError: division by zero"):
        load_repo(repo)

    (repo / "views.py").write_text("def broken(:\n")
    with pytest.raises(DefinitionError, match=r"^views\.py:1: SyntaxError: "):
        load_repo(repo)


def test_error_in_an_imported_sibling_names_the_sibling(repo: Path) -> None:
    (repo / "entities.py").write_text(ENTITIES.replace('"ts"', '"ts", oops=1'))

    with pytest.raises(DefinitionError) as caught:
        load_repo(repo)

    assert str(caught.value).startswith("entities.py:4: source 'txns': oops: ")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"windows": ("90s", "1h")},
            "views.py:4: feature view 'user_txn': window 90s is not a multiple of the tile 1m",
        ),
        (
            {"tile": 5},
            "views.py:4: feature view 'user_txn': tile: Input should be a valid string (got 5)",
        ),
        (
            {"windows": ("10 minutes",)},
            "views.py:10: aggregation: '10 minutes' is not a duration like '30s'",
        ),
    ],
)
def test_invalid_definitions_read_clearly(
    tmp_path: Path, edit: dict[str, Any], message: str
) -> None:
    repo = write_repo(tmp_path / "repo", **edit)

    with pytest.raises(DefinitionError) as caught:
        load_repo(repo)

    assert str(caught.value).startswith(message)


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="is neither a folder nor a .py file"):
        load_repo(tmp_path / "nowhere")
    with pytest.raises(DefinitionError, match="holds no .py files"):
        load_repo(tmp_path)


def test_parse_ref() -> None:
    assert parse_ref("v:f") == FeatureRef("v", "f")
    assert str(parse_ref("v@12:f")) == "v@12:f"
    for bad in ("v", "v@0:f", "v@x:f", ":f", "v:f:g", "1v:f"):
        with pytest.raises(DefinitionError):
            parse_ref(bad)


# --- the registry --------------------------------------------------------------------------------


def test_versions_change_only_when_the_computation_does(repo: Path, registry: Registry) -> None:
    first = registry.apply(load_repo(repo))
    assert [(c.kind, c.name, c.status) for c in first.changes] == [
        ("entity", "user", Status.CREATED),
        ("source", "txns", Status.CREATED),
        ("feature view", "user_txn", Status.CREATED),
        ("feature service", "fraud", Status.CREATED),
    ]
    assert first.views[0].version == 1

    again = registry.apply(load_repo(repo))
    assert {c.status for c in again.changes} == {Status.UNCHANGED}
    assert again.views[0].version == 1

    write_repo(repo, description="amount spent")
    described = registry.apply(load_repo(repo))
    assert (described.status("user_txn"), described.views[0].version) == (Status.METADATA, 1)
    assert registry.get_view("user_txn").view.description == "amount spent"

    write_repo(repo, windows=("10m", "2h"), description="amount spent")
    changed = registry.apply(load_repo(repo))
    assert (changed.status("user_txn"), changed.views[0].version) == (Status.UPDATED, 2)
    assert changed.status("fraud", kind="feature service") is Status.UNCHANGED

    latest, old = registry.get_view("user_txn"), registry.get_view("user_txn", 1)
    assert latest.version == 2
    assert latest.view.feature_names() == ["amount_sum_10m", "amount_sum_2h"]
    assert old.view.feature_names() == ["amount_sum_10m", "amount_sum_1h"]
    assert old.fingerprint == first.views[0].fingerprint != latest.fingerprint


def test_views_round_trip(repo: Path, registry: Registry) -> None:
    contents = load_repo(repo)
    registry.apply(contents)

    registered = registry.get_view("user_txn")

    assert registered.view == contents.views["user_txn"]
    assert registered.fingerprint == contents.views["user_txn"].fingerprint()
    assert registered.created_at.tzinfo is UTC
    assert abs(datetime.now(UTC) - registered.created_at) < timedelta(minutes=1)


def test_removed_versions_are_unreadable_and_never_reused(registry: Registry) -> None:
    registry.apply(RepoContents(views={"v": build_view("v", windows="10m")}))
    registry.apply(RepoContents(views={"v": build_view("v", windows="20m")}))

    registry.remove_view("v", 2)

    assert registry.get_view("v").version == 1
    with pytest.raises(RegistryError, match="version 2 of feature view 'v' was removed"):
        registry.get_view("v", 2)
    with pytest.raises(RegistryError, match=r"has no version 9 \(readable versions: 1\)"):
        registry.get_view("v", 9)

    result = registry.apply(RepoContents(views={"v": build_view("v", windows="20m")}))
    assert (result.status("v"), result.views[0].version) == (Status.UPDATED, 3)

    registry.remove_view("v", 1)
    registry.remove_view("v", 3)
    with pytest.raises(RegistryError, match="every version of feature view 'v' was removed"):
        registry.get_view("v")
    assert registry.list_views() == []

    result = registry.apply(RepoContents(views={"v": build_view("v", windows="10m")}))
    assert (result.status("v"), result.views[0].version) == (Status.CREATED, 4)


def test_list_views_latest_or_all(registry: Registry) -> None:
    registry.apply(RepoContents(views={"b": build_view("b"), "a": build_view("a")}))
    registry.apply(RepoContents(views={"b": build_view("b", windows="20m")}))

    assert [(r.name, r.version) for r in registry.list_views()] == [("a", 1), ("b", 2)]
    assert [(r.name, r.version) for r in registry.list_views(all_versions=True)] == [
        ("a", 1),
        ("b", 1),
        ("b", 2),
    ]


def test_resolve_refs_latest_and_pinned(repo: Path, registry: Registry) -> None:
    registry.apply(load_repo(repo))
    write_repo(repo, windows=("10m", "2h"))
    registry.apply(load_repo(repo))

    resolved = registry.resolve_refs(["user_txn:amount_sum_2h", "user_txn@1:amount_sum_1h"])

    assert [(r.name, r.version, feature) for r, feature in resolved] == [
        ("user_txn", 2, "amount_sum_2h"),
        ("user_txn", 1, "amount_sum_1h"),
    ]


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        (
            "user_txn:amount_sum_1h",
            RegistryError,
            "'user_txn:amount_sum_1h': feature view 'user_txn' version 2 has no feature "
            "'amount_sum_1h' (it has: amount_sum_10m, amount_sum_2h)",
        ),
        ("nope:x", RegistryError, "unknown feature view 'nope' (registered: user_txn)"),
        ("user_txn@7:x", RegistryError, "feature view 'user_txn' has no version 7"),
        ("user_txn", DefinitionError, "'user_txn' is not a feature reference"),
    ],
)
def test_resolve_refs_errors(
    repo: Path, registry: Registry, ref: str, error: type[Exception], message: str
) -> None:
    registry.apply(load_repo(repo))
    write_repo(repo, windows=("10m", "2h"))
    registry.apply(load_repo(repo))

    with pytest.raises(error) as caught:
        registry.resolve_refs([ref])

    assert message in str(caught.value)


def test_services_are_stored_as_refs(registry: Registry) -> None:
    view = build_view("v", windows="10m")
    service = FeatureService(name="model", features=[view, "v:amount_sum_10m"])
    registry.apply(RepoContents(views={"v": view}, services={"model": service}))

    stored = registry.get_service("model")

    assert stored.features == ["v:amount_sum_10m", "v:amount_sum_10m"]
    with pytest.raises(
        RegistryError, match=r"unknown feature service 'other' \(registered: model\)"
    ):
        registry.get_service("other")


def test_a_failing_apply_registers_nothing(registry: Registry) -> None:
    registry.apply(RepoContents(views={"v": build_view("v")}))
    service = FeatureService(name="model", features=["v@5:amount_sum_10m"])

    with pytest.raises(
        DefinitionError, match="feature service 'model': feature view 'v' has no version 5"
    ):
        registry.apply(RepoContents(views={"w": build_view("w")}, services={"model": service}))

    with pytest.raises(RegistryError, match="unknown feature view 'w'"):
        registry.get_view("w")


def test_registry_persists_in_wal_mode(tmp_path: Path, repo: Path) -> None:
    config = RegistrySettings(path=tmp_path / "nested" / "registry")
    Registry(config).apply(load_repo(repo))

    assert Registry(config).get_view("user_txn").version == 1
    with sqlite3.connect(config.path / DB_FILE_NAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_applies_make_one_version(tmp_path: Path, registry_url: str | None) -> None:
    config = RegistrySettings(path=tmp_path / "registry", url=registry_url)
    Registry(config)
    barrier = threading.Barrier(8)
    statuses: list[tuple[Status, int | None]] = []

    def apply(windows: str) -> None:
        registry = Registry(config)
        barrier.wait()
        contents = RepoContents(views={"v": build_view("v", windows=windows)})
        change = registry.apply(contents).views[0]
        statuses.append((change.status, change.version))

    for windows in ("10m", "20m"):
        threads = [threading.Thread(target=apply, args=(windows,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert Counter(statuses[:8]) == {(Status.CREATED, 1): 1, (Status.UNCHANGED, 1): 7}
    assert Counter(statuses[8:]) == {(Status.UPDATED, 2): 1, (Status.UNCHANGED, 2): 7}


def test_a_file_that_is_not_a_registry_is_reported(tmp_path: Path) -> None:
    (tmp_path / DB_FILE_NAME).write_text("not a database, just text " * 100)

    with pytest.raises(RegistryError, match="registry.db"):
        Registry(RegistrySettings(path=tmp_path))


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry under tmp_path, and no featurestore.yaml from the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSTORE_CONFIG", raising=False)
    monkeypatch.setenv("FSTORE_REGISTRY_PATH", str(tmp_path / "registry"))
    monkeypatch.setenv("COLUMNS", "120")
    return tmp_path / "registry"


def test_cli_apply_and_views(cli_env: Path, repo: Path) -> None:
    runner = CliRunner()

    first = runner.invoke(cli.app, ["apply", str(repo)])
    assert first.exit_code == 0, first.output
    assert "user_txn" in first.output and "created" in first.output and "v1" in first.output
    assert (cli_env / DB_FILE_NAME).exists()

    write_repo(repo, windows=("10m", "2h"))
    second = runner.invoke(cli.app, ["apply", str(repo)])
    assert second.exit_code == 0, second.output
    assert "updated" in second.output and "v2" in second.output

    listing = runner.invoke(cli.app, ["views", "--all"])
    assert listing.exit_code == 0, listing.output
    fingerprint = Registry(RegistrySettings(path=cli_env)).get_view("user_txn").fingerprint
    assert fingerprint in listing.output
    assert "amount_sum_2h" in listing.output and "amount_sum_1h" in listing.output

    removed = runner.invoke(cli.app, ["remove", "user_txn", "1"])
    assert removed.exit_code == 0, removed.output
    listing = runner.invoke(cli.app, ["views", "--all"])
    assert "amount_sum_2h" in listing.output and "amount_sum_1h" not in listing.output


def test_cli_views_without_a_registry(cli_env: Path) -> None:
    result = CliRunner().invoke(cli.app, ["views"])

    assert result.exit_code == 0
    assert "No feature views registered" in result.output
    assert not cli_env.exists()


def test_cli_apply_defaults_to_the_working_directory(
    cli_env: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)

    result = CliRunner().invoke(cli.app, ["apply"])

    assert result.exit_code == 0, result.output
    assert "user_txn" in result.output


def test_cli_apply_exits_1_with_the_definition_error(
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = write_repo(tmp_path / "bad", windows=("90s",))
    monkeypatch.setattr(cli, "_load_plugins", lambda: None)
    monkeypatch.setattr(sys, "argv", ["fstore", "apply", str(repo)])

    with pytest.raises(SystemExit) as caught:
        cli.main()

    assert caught.value.code == 1
    stderr = " ".join(capsys.readouterr().err.split())
    assert "error: views.py:4: feature view 'user_txn': window 90s is not a multiple" in stderr


@pytest.mark.integration
def test_cli_remove_deletes_the_lifetime_states_that_never_expire(
    cli_env: Path, repo: Path, redis: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = key_prefix.rstrip(":")
    monkeypatch.setenv("FSTORE_REDIS_URL", redis)
    monkeypatch.setenv("FSTORE_REDIS_NAMESPACE", namespace)
    runner = CliRunner()
    write_repo(repo, windows=("10m", "lifetime"))
    assert runner.invoke(cli.app, ["apply", str(repo)]).exit_code == 0
    client = client_of(redis)
    store = OnlineStore(RedisSettings(url=redis, namespace=namespace))
    life = f"{store.entity_prefix('user_txn', 1, 'u1')}:life"
    tile = f"{store.entity_prefix('user_txn', 1, 'u1')}:0"
    client.hset(life, "b", b"state")
    client.hset(tile, "b", b"state")
    store.close()

    removed = runner.invoke(cli.app, ["remove", "user_txn", "1"])

    assert removed.exit_code == 0, removed.output
    assert "Deleted 1 lifetime state keys of user_txn v1" in removed.output
    assert client.exists(life) == 0 and client.exists(tile) == 1
