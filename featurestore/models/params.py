"""LightGBM parameters: sane, reproducible defaults with the user's values merged over them.

A user's key may be any LightGBM alias (`n_estimators`, `eta`, ...). LightGBM itself keeps the
canonical key when both are given, so a default `num_iterations` would silently beat a user's
`n_estimators`; aliases are therefore folded into the canonical names here, for the keys we
set defaults for. The objective is not a parameter here: it is chosen by `objective=` /
`--objective` (or from the labels), which also picks the primary metric the gate compares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from featurestore.errors import ConfigError

__all__ = ["ALIASES", "defaults", "load_params", "merge_params"]

# Canonical name -> LightGBM's other names for it (a test checks them against LightGBM's table).
ALIASES: dict[str, tuple[str, ...]] = {
    "num_iterations": (
        "num_iteration",
        "n_iter",
        "num_tree",
        "num_trees",
        "num_round",
        "num_rounds",
        "nrounds",
        "num_boost_round",
        "n_estimators",
        "max_iter",
    ),
    "early_stopping_round": ("early_stopping_rounds", "early_stopping", "n_iter_no_change"),
    "learning_rate": ("shrinkage_rate", "eta"),
    "num_leaves": ("num_leaf", "max_leaves", "max_leaf", "max_leaf_nodes"),
    "seed": ("random_seed", "random_state"),
    "num_threads": ("num_thread", "nthread", "nthreads", "n_jobs"),
    "verbosity": ("verbose",),
    "metric": ("metrics", "metric_types"),
    "objective": ("objective_type", "app", "application", "loss"),
}
_CANONICAL = {alias: name for name, aliases in ALIASES.items() for alias in (name, *aliases)}


def defaults(objective: str) -> dict[str, Any]:
    """Defaults for `binary` or `regression`: a fixed seed and deterministic row-wise
    histograms, so the same data gives the same model. Early stopping watches a proper scoring
    rule (log loss, RMSE): AUC only ranks, so it stops as soon as the order is right, while the
    probabilities a server thresholds are still far from calibrated."""
    return {
        "objective": objective,
        "metric": "binary_logloss" if objective == "binary" else "rmse",
        "num_iterations": 200,
        "early_stopping_round": 20,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "seed": 42,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbosity": -1,
    }


def merge_params(objective: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """`defaults(objective)` with `params` over them, aliases folded into canonical names.

    >>> merge_params("binary", {"n_estimators": 50})["num_iterations"]
    50
    """
    merged = defaults(objective)
    seen: dict[str, str] = {}
    for key, value in (params or {}).items():
        canonical = _CANONICAL.get(key, key)
        if canonical == "objective":
            raise ConfigError(
                f"params set {key!r}; choose the objective with objective= (CLI: --objective "
                "binary|regression) instead, so the gate knows which metric to compare"
            )
        if canonical in seen:
            raise ConfigError(
                f"params set both {seen[canonical]!r} and {key!r}, which LightGBM reads as the "
                f"same parameter {canonical!r}; keep one"
            )
        seen[canonical] = key
        merged[canonical] = value
    return merged


def load_params(path: Path) -> dict[str, Any]:
    """A params file: a JSON (`.json`) or YAML mapping of LightGBM parameters."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the params file {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"params file {path} does not parse: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(
            f"params file {path} must hold a mapping of LightGBM parameters, e.g. "
            "'learning_rate: 0.1'"
        )
    return data
