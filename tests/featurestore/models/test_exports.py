"""featurestore.models exports a small, deliberate public API."""

from __future__ import annotations

import featurestore.models
import featurestore.models.registry


def test_models_exports() -> None:
    assert featurestore.models.__all__ == [
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
    for name in featurestore.models.__all__:
        assert hasattr(featurestore.models, name)


def test_the_registry_module_keeps_the_contract_names() -> None:
    """The serving app imports these from featurestore.models.registry."""
    for name in featurestore.models.registry.__all__:
        assert getattr(featurestore.models.registry, name) is getattr(featurestore.models, name)
