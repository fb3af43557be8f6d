"""Versioned training datasets: manifest, listing, and reproducible content."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featurestore import FeatureStore, Registry, RequestError, cli, load_repo
from featurestore.config import OfflineSettings, RegistrySettings, Settings
from featurestore.offline import datasets, durable
from featurestore.offline.log import OfflineStore
from tests.featurestore.offline.conftest import OfflineConfig
from tests.featurestore.offline.test_compaction import offline_env

SECOND = 1_000_000
T0 = 1_767_225_600 * SECOND
REPO = """
from featurestore import Aggregation, Entity, FeatureService, FeatureView, KafkaSource

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(name="txns", topic="txns", timestamp_field="ts",
                   schema={"user_id": "string", "amount": "float64"})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
    aggregations=[Aggregation(column="amount", function="sum", windows=["10m", "1h"]),
                  Aggregation(column="amount", function="last", windows=["1h"])])
fraud = FeatureService(name="fraud",
                       features=["user_txn:amount_sum_10m", "user_txn:amount_last_1h"])
"""


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    """A feature store whose offline log is a local folder."""
    return make_store(tmp_path, OfflineSettings(root=tmp_path / "offline"))


@pytest.fixture
def any_store(tmp_path: Path, offline_config: OfflineConfig) -> FeatureStore:
    """A feature store whose offline log is a local folder, or on a real S3 server."""
    return make_store(tmp_path, offline_config("offline"))


def make_store(tmp_path: Path, offline: OfflineSettings) -> FeatureStore:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "features.py").write_text(REPO)
    settings = Settings(offline=offline, registry=RegistrySettings(path=tmp_path / "registry"))
    Registry(settings.registry).apply(load_repo(tmp_path / "repo"))
    events = pa.table(
        {
            "user_id": ["a", "a", "b", "a"],
            "amount": [1.0, 2.0, 5.0, 4.0],
            "event_timestamp": pa.array(
                [T0, T0 + 30 * SECOND, T0 + 40 * SECOND, T0 + 900 * SECOND],
                pa.timestamp("us", tz="UTC"),
            ),
            "_partition": pa.array([0, 0, 1, 0], pa.int32()),
            "_offset": pa.array([0, 1, 0, 2], pa.int64()),
        }
    )
    OfflineStore(settings.offline).append("user_txn", 1, events)
    return FeatureStore(settings)


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": ["a", "b", "a"],
                "event_timestamp": pa.array(
                    [T0 + 60 * SECOND, T0 + 60 * SECOND, T0 + 1000 * SECOND],
                    pa.timestamp("us", tz="UTC"),
                ),
                "is_fraud": [0, 1, 0],
            }
        ),
        path,
    )
    return path


def test_create_dataset_writes_rows_and_a_manifest(any_store: FeatureStore, labels: Path) -> None:
    store = any_store
    dataset = store.create_dataset("train", labels, service="fraud")

    assert (dataset.name, dataset.version) == ("train", 1)
    rows = dataset.read().to_pylist()
    assert [r["user_txn__amount_sum_10m"] for r in rows] == [3.0, 5.0, 4.0]
    assert [r["user_txn__amount_last_1h"] for r in rows] == [2.0, 5.0, 4.0]
    assert [r["is_fraud"] for r in rows] == [0, 1, 0]
    manifest = dataset.manifest
    assert manifest["features"] == ["user_txn@1:amount_sum_10m", "user_txn@1:amount_last_1h"]
    assert manifest["service"] == "fraud"
    assert manifest["row_count"] == 3
    assert manifest["views"]["user_txn"]["version"] == 1
    assert manifest["time_range"] == ["2026-01-01T00:01:00+00:00", "2026-01-01T00:16:40+00:00"]
    assert set(manifest["libraries"]) == {"fstore", "duckdb", "pyarrow"}
    storage = store.datasets.storage
    assert json.loads(storage.read_bytes(dataset.path.parent / "manifest.json")) == manifest
    assert store.datasets.get("train") == dataset


def test_recreating_from_the_manifest_gives_the_same_content(
    any_store: FeatureStore, labels: Path
) -> None:
    store = any_store
    first = store.create_dataset("train", labels, features=["user_txn:amount_sum_1h"])
    again = store.recreate_dataset("train@1")

    assert again.version == 2
    assert again.manifest["content_hash"] == first.manifest["content_hash"]
    assert again.manifest["entity_rows_hash"] == first.manifest["entity_rows_hash"]
    # Different features, different content.
    other = store.create_dataset("train", labels, features=["user_txn:amount_sum_10m"])
    assert other.manifest["content_hash"] != first.manifest["content_hash"]
    assert [d.ref for d in store.datasets.all()] == ["train@1", "train@2", "train@3"]


def test_unknown_dataset_is_named(any_store: FeatureStore) -> None:
    with pytest.raises(RequestError, match="no dataset named 'nope'"):
        any_store.datasets.get("nope@1")


def test_cli_create_list_show(
    any_store: FeatureStore, labels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSTORE_CONFIG", raising=False)
    offline_env(monkeypatch, any_store.settings.offline)
    monkeypatch.setenv("FSTORE_REGISTRY_PATH", str(tmp_path / "registry"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    created = runner.invoke(
        cli.app, ["dataset", "create", "train", "--entities", str(labels), "--service", "fraud"]
    )
    assert created.exit_code == 0, created.output
    assert "Created train@1: 3 rows" in created.output
    listing = runner.invoke(cli.app, ["dataset", "list"])
    assert "train@1" in listing.output
    shown = runner.invoke(cli.app, ["dataset", "show", "train"])
    assert shown.exit_code == 0
    assert '"row_count": 3' in shown.output


@pytest.mark.parametrize(
    "name", ["", "a/b", "..", "../escape", "a\\b", ".hidden", "a..b", "a@b", "a b", "x" * 129]
)
def test_dataset_names_that_are_not_plain_folder_names_are_refused(
    store: FeatureStore, labels: Path, name: str
) -> None:
    with pytest.raises(RequestError, match="is not allowed"):
        store.create_dataset(name, labels, service="fraud")
    if "@" not in name:  # in a ref, `@` starts the version
        with pytest.raises(RequestError, match="is not allowed"):
            store.datasets.get(f"{name}@1")
    assert not store.datasets.root.exists() or [p.name for p in store.datasets.root.iterdir()] == []


def test_a_create_that_dies_leaves_nothing_and_the_next_one_works(
    store: FeatureStore, labels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(path: Path) -> str:
        raise KeyboardInterrupt("killed while hashing")

    with monkeypatch.context() as patch:
        patch.setattr(datasets, "content_hash", die)
        with pytest.raises(KeyboardInterrupt):
            store.create_dataset("train", labels, service="fraud")
    assert list((store.datasets.root / "train").iterdir()) == []

    # What the old code left when it died: a version folder without a manifest.
    (store.datasets.root / "train" / "v1").mkdir()
    (store.datasets.root / "train" / "v1" / "data.parquet").write_bytes(b"half")
    # And a build of a process killed with -9 (its pid is gone): removed by the next create.
    killed = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = (
        store.datasets.root / "train" / f".{'c' * 32}.{durable._HOST}.{killed.stdout.strip()}.tmp"
    )
    orphan.mkdir()
    (orphan / "entities.parquet").write_bytes(b"half")

    dataset = store.create_dataset("train", labels, service="fraud")

    assert (dataset.version, dataset.manifest["version"]) == (2, 2)
    assert dataset.path == store.datasets.root / "train" / "v2" / "data.parquet"
    assert store.datasets.versions("train") == [2]
    assert store.datasets.get("train").manifest == dataset.manifest
    assert not orphan.exists()
    assert dataset.manifest["quarantined"] == []


def test_a_version_taken_by_a_concurrent_create_makes_this_one_the_next(
    store: FeatureStore, labels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_publish = datasets.publish
    taken: list[Path] = []

    def other_create_first(temp: Path, target: Path) -> None:
        if not taken:  # another process publishes this version a moment before us
            target.mkdir()
            (target / datasets.MANIFEST).write_text("{}")
            taken.append(target)
        real_publish(temp, target)

    monkeypatch.setattr(datasets, "publish", other_create_first)
    dataset = store.create_dataset("train", labels, service="fraud")

    assert taken == [store.datasets.root / "train" / "v1"]
    assert dataset.version == 2
    assert json.loads((taken[0] / datasets.MANIFEST).read_text()) == {}
    assert sorted(p.name for p in (store.datasets.root / "train").iterdir()) == ["v1", "v2"]


def test_racing_creates_on_an_object_store_take_distinct_versions(
    tmp_path: Path, s3: Any, labels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two creates claim v1 at once (both claims are written before either lists them): both
    give it up, and each publishes a version of its own, whole. Two barriers force that order:
    both list the versions before either claims (so both pick v1), and both have claimed before
    either lists the claims."""
    store = make_store(tmp_path, s3.settings())
    storage = store.datasets.storage
    chose, claimed = threading.Barrier(2, timeout=120), threading.Barrier(2, timeout=120)
    real_subfolders, real_children = type(storage).subfolders, type(storage).children
    first_listing: set[int] = set()
    first_claims: set[int] = set()

    def subfolders(self: Any, directory: PurePath) -> list[PurePath]:
        found = real_subfolders(self, directory)
        me = threading.get_ident()
        if directory.name == "train" and me not in first_listing and len(first_listing) < 2:
            first_listing.add(me)  # the two creators' first listing (not the test's own, later)
            chose.wait()
        return found

    def children(self: Any, directory: PurePath) -> list[PurePath]:
        if directory.name == "claims" and directory.parent.name == "v1":
            me = threading.get_ident()
            if me not in first_claims and len(first_claims) < 2:
                first_claims.add(me)
                claimed.wait()
        return real_children(self, directory)

    monkeypatch.setattr(type(storage), "subfolders", subfolders)
    monkeypatch.setattr(type(storage), "children", children)
    made: list[datasets.Dataset] = []

    def create() -> None:
        made.append(store.create_dataset("train", labels, service="fraud"))

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    assert not any(t.is_alive() for t in threads) and len(made) == 2
    versions = sorted(d.version for d in made)
    assert len(set(versions)) == 2 and 1 not in versions
    assert store.datasets.versions("train") == versions
    for dataset in made:
        again = store.datasets.get(dataset.ref)
        assert again.manifest == dataset.manifest
        assert again.content_hash() == dataset.manifest["content_hash"]
