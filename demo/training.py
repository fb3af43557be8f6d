"""Step 5: labels read back from Kafka become entity rows, a versioned point-in-time training set
(`FeatureStore.create_dataset`), a LightGBM model (`FeatureStore.train_model`) that must have
learned the planted pattern, promoted to production.

A second model is trained on the same rows with what `fraud_detection_realtime` adds to the
windowed features (the request-time feature, whose `amount` field the rows carry; any richer
aggregation of the template), and both holdout AUCs are printed: what those features are
worth, on the same later rows. The second model is registered, not promoted."""

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

__all__ = [
    "DATASET",
    "LABEL",
    "MODEL",
    "REALTIME_MODEL",
    "REALTIME_SERVICE",
    "SERVICE",
    "Comparison",
    "Trained",
    "entity_rows",
    "train_and_promote",
    "train_with_added_features",
]

MODEL, SERVICE, DATASET, LABEL = "fraud", "fraud_detection", "fraud_training", "is_fraud"
REALTIME_MODEL, REALTIME_SERVICE = "fraud_realtime", "fraud_detection_realtime"
REALTIME_DATASET = "fraud_training_realtime"
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


@dataclass(frozen=True)
class Comparison:
    """The holdout AUC of the model on the windowed features alone and of the one with the
    features `fraud_detection_realtime` adds (`added`), on the same later rows."""

    without: ModelVersion
    with_added: ModelVersion
    added: list[str]

    @property
    def gain(self) -> float:
        return float(self.with_added.metrics["auc"] - self.without.metrics["auc"])

    def describe(self) -> str:
        without, with_added = self.without, self.with_added
        names = ", ".join(ref.split(":", 1)[1] for ref in self.added)
        return (
            f"holdout AUC without the added features {without.metrics['auc']:.3f} "
            f"({without.ref}), with them {with_added.metrics['auc']:.3f} ({with_added.ref}: "
            f"+ {names}): {self.gain:+.3f}"
        )


def entity_rows(labels: list[dict[str, Any]], labelled_from_us: int) -> pa.Table:
    """Training rows from label records: the transaction's entities, time and amount (the
    request field of the request-time feature), and the label. Rows before `labelled_from_us`
    are left out: their day windows are not full yet."""
    users, merchants, times, amounts, fraud = [], [], [], [], []
    for label in labels:
        at = to_us(datetime.fromisoformat(label["transaction_ts"]))
        if at < labelled_from_us:
            continue
        users.append(label["entities"]["user_id"])
        merchants.append(label["entities"]["merchant_id"])
        times.append(at)
        amounts.append(label["amount"])
        fraud.append(label["label"])
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "merchant_id": pa.array(merchants, pa.string()),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            "amount": pa.array(amounts, pa.float64()),
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


def train_with_added_features(
    store: FeatureStore, rows: pa.Table, without: ModelVersion, console: Console
) -> Comparison:
    """The same rows through `fraud_detection_realtime`; a model on them, registered beside
    the production one; both holdout AUCs printed."""
    base = set(store.registry.get_service(SERVICE).refs())
    added = [ref for ref in store.registry.get_service(REALTIME_SERVICE).refs() if ref not in base]
    with console.status("Point-in-time join with the request-time features (DuckDB, numpy)"):
        dataset = store.create_dataset(REALTIME_DATASET, rows, service=REALTIME_SERVICE)
    with console.status("Training LightGBM with them (the same split)"):
        version = store.train_model(
            dataset.ref,
            REALTIME_MODEL,
            LABEL,
            who=WHO,
            description="fstore demo: stolen-card bursts, with request-time features",
        )
    comparison = Comparison(without, version, added)
    console.print(comparison.describe(), highlight=False)
    return comparison
