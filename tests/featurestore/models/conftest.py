"""Fixtures for the model tests: a model registry in a temp folder, a small real LightGBM model
to register, and a feature store whose offline log holds a planted pattern to learn."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore, Registry, load_repo
from featurestore.config import ModelsSettings, OfflineSettings, RegistrySettings, Settings
from featurestore.models import (
    DatasetRef,
    FeatureSpec,
    ModelRegistry,
    ModelVersion,
    Objective,
    Signature,
)
from featurestore.offline.log import OfflineStore

SECOND = 1_000_000
T0 = 1_767_225_600 * SECOND  # 2026-01-01T00:00:00Z
ROWS = 800
USERS = 100
REPO = """
from featurestore import Aggregation, Entity, FeatureService, FeatureView, KafkaSource

user = Entity(name="user", join_keys=["user_id"])
txns = KafkaSource(name="txns", topic="txns", timestamp_field="ts",
                   schema={"user_id": "string", "amount": "float64", "noise": "float64"})
user_txn = FeatureView(name="user_txn", entities=[user], source=txns, tile="1m",
    aggregations=[Aggregation(column="amount", function="last", windows=["1h"]),
                  Aggregation(column="noise", function="sum", windows=["10m"])])
fraud = FeatureService(name="fraud",
                       features=["user_txn:amount_last_1h", "user_txn:noise_sum_10m"])
"""


@pytest.fixture
def models_registry(tmp_path: Path, registry_url: str | None) -> ModelRegistry:
    return ModelRegistry(ModelsSettings(path=tmp_path / "models", url=registry_url))


@pytest.fixture(scope="session")
def model_text() -> str:
    """A real (tiny) LightGBM model in its text format."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(float)
    params = {"objective": "binary", "num_iterations": 3, "verbosity": -1, "num_threads": 1}
    return str(lgb.train(params, lgb.Dataset(x, label=y)).model_to_string())


SIGNATURE = Signature(
    features=(
        FeatureSpec("user_txn@1:amount_last_1h", "user_txn__amount_last_1h"),
        FeatureSpec("user_txn@1:noise_sum_10m", "user_txn__noise_sum_10m"),
    ),
    entity_keys=("user_id",),
    service="fraud",
)

Register = Callable[..., ModelVersion]


@pytest.fixture
def register(models_registry: ModelRegistry, model_text: str) -> Register:
    """Register a version of `name` whose validation metrics are `metrics` (default auc)."""

    def make(name: str = "fraud", who: str = "alice", **metrics: float) -> ModelVersion:
        binary = "rmse" not in metrics
        return models_registry.register(
            name,
            model_text,
            objective=Objective.BINARY if binary else Objective.REGRESSION,
            signature=SIGNATURE,
            label="is_fraud",
            dataset=DatasetRef("train", 1, "ab" * 32),
            views={"user_txn": 1},
            params={"learning_rate": 0.05},
            metrics=metrics or {"auc": 0.8},
            primary_metric="auc" if binary else "rmse",
            profile={"version": 1},
            who=who,
        )

    return make


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    """A store whose log has, before each label row, one event of that row's user: the label is
    1 when its amount is above 50 (5% of labels flipped); `noise` carries nothing."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "features.py").write_text(REPO)
    settings = Settings(
        offline=OfflineSettings(root=tmp_path / "offline"),
        registry=RegistrySettings(path=tmp_path / "registry"),
        models=ModelsSettings(path=tmp_path / "models"),
    )
    Registry(settings.registry).apply(load_repo(tmp_path / "repo"))
    rng = np.random.default_rng(7)
    amounts = rng.uniform(0, 100, ROWS)
    # Rows every 30 s: a user's previous event is 50 min old, outside the 10 min window.
    times = T0 + np.arange(ROWS) * 30 * SECOND
    users = [f"u{i % USERS}" for i in range(ROWS)]
    events = pa.table(
        {
            "user_id": users,
            "amount": amounts,
            "noise": rng.normal(size=ROWS),
            "event_timestamp": pa.array(times - 5 * SECOND, pa.timestamp("us", tz="UTC")),
            "_partition": pa.array(np.zeros(ROWS), pa.int32()),
            "_offset": pa.array(np.arange(ROWS), pa.int64()),
        }
    )
    OfflineStore(settings.offline).append("user_txn", 1, events)
    labels = (amounts > 50).astype(np.int64)
    flipped = rng.random(ROWS) < 0.05
    labels[flipped] = 1 - labels[flipped]
    pq.write_table(
        pa.table(
            {
                "user_id": users,
                "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
                "is_fraud": labels,
                "spend": amounts * 2 + rng.normal(size=ROWS),
            }
        ),
        tmp_path / "labels.parquet",
    )
    return FeatureStore(settings)


def dataset_rows(store: FeatureStore, ref: str) -> dict[str, Any]:
    """A dataset's rows as numpy columns, sorted by time."""
    table = pq.read_table(store.datasets.get(ref).path).sort_by("event_timestamp")
    return {name: table.column(name).to_numpy() for name in table.column_names}
