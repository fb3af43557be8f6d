"""Training end to end on a planted pattern, without Kafka or Redis: a dataset from the offline
log, a time-ordered split, LightGBM, and a registered version whose lineage is the dataset's."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore, RequestError
from featurestore.errors import ConfigError
from featurestore.models import Objective, bin_counts, roc_auc
from featurestore.models.params import ALIASES, merge_params
from featurestore.models.train import _time_split
from tests.featurestore.models.conftest import ROWS, dataset_rows

FEATURES = ["user_txn__amount_last_1h", "user_txn__noise_sum_10m"]


@pytest.fixture
def dataset(store: FeatureStore, tmp_path: Path) -> str:
    return store.create_dataset("train", tmp_path / "labels.parquet", service="fraud").ref


def test_training_learns_the_pattern_on_a_time_ordered_split(
    store: FeatureStore, dataset: str
) -> None:
    version = store.train_model(dataset, "fraud", "is_fraud", who="alice")

    assert (version.ref, version.objective, version.primary_metric) == (
        "fraud@1",
        Objective.BINARY,
        "auc",
    )
    assert version.metrics["auc"] > 0.85  # 5% of labels are flipped: ~0.95 is the ceiling
    assert set(version.metrics) == {"auc", "pr_auc", "logloss"}
    assert 0 < version.params["best_iteration"] <= 200
    split = version.params["split"]
    assert (split["training_rows"], split["validation_rows"]) == (ROWS * 4 // 5, ROWS // 5)

    # The last 20% by time validate, all strictly later than every training row.
    rows = dataset_rows(store, dataset)
    times = rows["event_timestamp"]
    cut = split["training_rows"]
    boundary = np.datetime64(datetime.fromisoformat(split["validation_from"]).replace(tzinfo=None))
    assert times[cut - 1] < boundary <= times[cut]
    # The artifact loads on its own and gives back the registered validation metric, which
    # holds only if the metric was computed on exactly those latest rows.
    booster = lgb.Booster(model_str=store.models.load_text(version))
    assert booster.feature_name() == FEATURES
    x = np.column_stack([rows[name].astype(float) for name in FEATURES])
    scores = booster.predict(x[cut:])
    assert roc_auc(rows["is_fraud"][cut:], scores) == pytest.approx(version.metrics["auc"], abs=0)
    score_profile = version.profile["score"]
    assert score_profile["count"] == ROWS // 5
    assert score_profile["mean"] == pytest.approx(float(np.mean(scores)), rel=1e-12)
    assert bin_counts(score_profile["edges"], scores).tolist() == score_profile["counts"]
    # The feature profile is the training rows'.
    amounts = version.profile["features"]["user_txn__amount_last_1h"]
    assert amounts["count"] == cut
    assert amounts["max"] == pytest.approx(float(np.nanmax(x[:cut, 0])))


def test_the_version_records_the_dataset_lineage(store: FeatureStore, dataset: str) -> None:
    version = store.train_model(dataset, "fraud", "is_fraud", who="alice", description="first")
    manifest = store.datasets.get(dataset).manifest

    assert version.dataset.name == manifest["name"] == "train"
    assert version.dataset.version == manifest["version"]
    assert version.dataset.content_hash == manifest["content_hash"]
    assert version.views == {"user_txn": manifest["views"]["user_txn"]["version"]}
    assert [spec.ref for spec in version.signature.features] == manifest["features"]
    assert [spec.name for spec in version.signature.features] == FEATURES
    assert version.signature.entity_keys == ("user_id",)
    assert version.signature.service == "fraud"
    assert version.label == "is_fraud"
    assert (version.created_by, version.description) == ("alice", "first")
    assert set(version.libraries) == {"lightgbm", "fstore", "python", "numpy"}
    assert version.params["deterministic"] is True and version.params["seed"] == 42
    assert store.models.get("fraud", 1) == version


def test_training_is_reproducible(store: FeatureStore, dataset: str) -> None:
    first = store.train_model(dataset, "fraud", "is_fraud", who="alice")
    second = store.train_model(dataset, "fraud", "is_fraud", who="alice")

    assert second.version == 2
    assert second.artifact_sha256 == first.artifact_sha256


def test_regression_is_chosen_for_continuous_labels(store: FeatureStore, dataset: str) -> None:
    version = store.train_model(
        dataset, "spend", "spend", {"n_estimators": 60, "early_stopping_rounds": 5}
    )

    assert version.objective is Objective.REGRESSION
    assert version.primary_metric == "rmse" and set(version.metrics) == {"rmse", "mae"}
    # spend = 2 * amount + N(0, 1) with amount in [0, 100): far better than predicting a mean.
    assert version.metrics["rmse"] < 20
    assert version.params["num_iterations"] == 60 and "n_estimators" not in version.params
    assert version.params["early_stopping_round"] == 5


def test_bad_training_requests_say_what_is_wrong(store: FeatureStore, dataset: str) -> None:
    with pytest.raises(RequestError, match=r"no column 'nope'.*is_fraud"):
        store.train_model(dataset, "fraud", "nope")
    with pytest.raises(RequestError, match="is a feature"):
        store.train_model(dataset, "fraud", "user_txn__noise_sum_10m")
    with pytest.raises(RequestError, match="binary needs labels 0 or 1"):
        store.train_model(dataset, "fraud", "spend", objective="binary")
    with pytest.raises(RequestError, match="validation_fraction"):
        store.train_model(dataset, "fraud", "is_fraud", validation_fraction=1.0)
    with pytest.raises(ConfigError, match="objective="):
        store.train_model(dataset, "fraud", "is_fraud", {"objective": "huber"})
    with pytest.raises(RequestError, match="no dataset named 'other'"):
        store.train_model("other", "fraud", "is_fraud")
    assert store.models.models() == []


def test_a_dataset_whose_rows_changed_is_refused(store: FeatureStore, dataset: str) -> None:
    path = store.datasets.get(dataset).path
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)

    with pytest.raises(RequestError, match="changed since it was created"):
        store.train_model(dataset, "fraud", "is_fraud")


def test_rows_sharing_the_boundary_time_all_validate() -> None:
    times = np.array([1, 2, 3, 4, 5, 6, 7, 8, 8, 8], dtype=np.int64)

    assert _time_split(times, 0.2) == 7  # not 8: the three rows at 8 validate together
    assert _time_split(np.arange(10, dtype=np.int64), 0.2) == 8
    assert _time_split(np.arange(10, dtype=np.int64), 0.01) == 9  # at least one row validates
    with pytest.raises(RequestError, match="cannot split"):
        _time_split(np.full(5, 3, dtype=np.int64), 0.2)


def test_param_aliases_fold_into_lightgbm_canonical_names() -> None:
    from lightgbm.basic import _ConfigAliases

    for canonical, aliases in ALIASES.items():
        assert set(aliases) | {canonical} == _ConfigAliases.get(canonical)
    assert merge_params("binary", {"eta": 0.2})["learning_rate"] == 0.2
    with pytest.raises(ConfigError, match="both 'eta' and 'shrinkage_rate'"):
        merge_params("binary", {"eta": 0.2, "shrinkage_rate": 0.1})
