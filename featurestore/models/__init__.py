"""Models: LightGBM training from datasets, and the model registry (lineage, aliases, traffic,
the promotion gate)."""

from __future__ import annotations

from featurestore.models.evaluation import average_precision, log_loss, mae, rmse, roc_auc
from featurestore.models.profile import bin_counts, reference_profile
from featurestore.models.registry import (
    CANARY,
    PRODUCTION,
    SHADOW,
    AuditEntry,
    DatasetRef,
    FeatureSpec,
    ModelRegistry,
    ModelVersion,
    Objective,
    PromotionRefused,
    Rollout,
    Signature,
)
from featurestore.models.train import train_model

__all__ = [
    "CANARY",
    "PRODUCTION",
    "SHADOW",
    "AuditEntry",
    "DatasetRef",
    "FeatureSpec",
    "ModelRegistry",
    "ModelVersion",
    "Objective",
    "PromotionRefused",
    "Rollout",
    "Signature",
    "average_precision",
    "bin_counts",
    "log_loss",
    "mae",
    "reference_profile",
    "rmse",
    "roc_auc",
    "train_model",
]
