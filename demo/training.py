"""Step 5: labels read back from Kafka become entity rows, a versioned point-in-time training set
(`FeatureStore.create_dataset`), a LightGBM model (`FeatureStore.train_model`) that must have
learned the planted pattern, promoted to production."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console

from demo.errors import DemoError
from featurestore.models.registry import PRODUCTION, ModelVersion
from featurestore.store import FeatureStore
from featurestore.timestamps import to_us

__all__ = ["DATASET", "LABEL", "MODEL", "SERVICE", "Trained", "entity_rows", "train_and_promote"]

MODEL, SERVICE, DATASET, LABEL = "fraud", "fraud_detection", "fraud_training", "is_fraud"
WHO = "fstore demo"


@dataclass(frozen=True)
class Trained:
    dataset: str
    rows: int
    fraud: int
    version: ModelVersion

    @property
    def validation_rows(self) -> int:
        return int(self.version.params["split"]["validation_rows"])


def entity_rows(labels: list[dict[str, Any]], labelled_from_us: int) -> pa.Table:
    """Training rows from label records: the transaction's entities and time, and the label.
    Rows before `labelled_from_us` are left out: their day windows are not full yet."""
    users, merchants, times, fraud = [], [], [], []
    for label in labels:
        at = to_us(datetime.fromisoformat(label["transaction_ts"]))
        if at < labelled_from_us:
            continue
        users.append(label["entities"]["user_id"])
        merchants.append(label["entities"]["merchant_id"])
        times.append(at)
        fraud.append(label["label"])
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "merchant_id": pa.array(merchants, pa.string()),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            LABEL: pa.array(fraud, pa.int8()),
        }
    )


def train_and_promote(
    store: FeatureStore, rows: pa.Table, min_auc: float, console: Console
) -> Trained:
    with console.status("Point-in-time join of the service's features (DuckDB)"):
        dataset = store.create_dataset(DATASET, rows, service=SERVICE)
    console.print(
        f"dataset {dataset.ref}: {dataset.manifest['row_count']:,} rows x "
        f"{len(dataset.manifest['features'])} features, content hash "
        f"{dataset.manifest['content_hash'][:16]}"
    )
    with console.status("Training LightGBM (time-ordered split)"):
        version = store.train_model(
            dataset.ref, MODEL, LABEL, who=WHO, description="fstore demo: stolen-card bursts"
        )
    trained = Trained(dataset.ref, rows.num_rows, int(pc.sum(rows[LABEL]).as_py() or 0), version)
    auc = version.metrics["auc"]
    console.print(
        f"{version.ref}: holdout AUC {auc:.3f}, PR-AUC {version.metrics['pr_auc']:.3f} on the "
        f"newest {trained.validation_rows:,} rows (validation from "
        f"{version.params['split']['validation_from']})"
    )
    if not auc > min_auc:
        raise DemoError(
            f"holdout AUC {auc:.3f} is not above {min_auc}: the model did not learn the planted "
            "fraud pattern",
            "give it more data (--users, --hours) or another --seed; the training set is "
            f"{dataset.path}",
        )
    store.models.set_alias(
        MODEL, PRODUCTION, version.version, who=WHO, reason=f"holdout AUC {auc:.3f} > {min_auc}"
    )
    console.print(f"{version.ref} promoted to {PRODUCTION}")
    return trained
