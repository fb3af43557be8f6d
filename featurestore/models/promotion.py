"""Promotion rules: the metric gate, aliases, traffic weights, and the audit record.

Kept apart from storage (`registry.py`) so the rules read in one place: when a candidate is
worse than production, which alias takes traffic, and how weights are normalised. A model's
`Rollout` is its aliases and traffic weights as a server routes by them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from featurestore.actor import default_who
from featurestore.errors import RegistryError

__all__ = [
    "CANARY",
    "HIGHER_IS_BETTER",
    "PRODUCTION",
    "SHADOW",
    "AuditEntry",
    "PromotionRefused",
    "Rollout",
    "Scored",
    "check_name",
    "default_who",
    "gate",
    "normalise_weights",
]

PRODUCTION = "production"
CANARY = "canary"
SHADOW = "shadow"

# The direction of each metric a model may be gated on.
HIGHER_IS_BETTER = {"auc": True, "pr_auc": True, "rmse": False, "mae": False, "logloss": False}
# Model and alias names become folder names and URL segments: no slashes, no leading dot, no '@'.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")


class PromotionRefused(RegistryError):
    """Promotion to production was refused by the metric gate (pass force=True with a reason)."""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    model: str
    at: datetime  # UTC
    who: str
    action: str  # "register" | "alias" | "remove_alias" | "rollback" | "traffic"
    alias: str | None
    from_version: int | None
    to_version: int | None
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. {"weights": {...}, "forced": True}


@dataclass(frozen=True)
class Rollout:
    """What a server needs to route a model's requests."""

    model: str
    aliases: dict[str, int]  # alias -> version
    traffic: dict[str, float]  # alias -> weight (sums to 1); default {"production": 1.0}


class Scored(NamedTuple):
    """A version as the gate sees it."""

    version: int
    primary_metric: str
    metrics: dict[str, float]


def gate(
    model: str, production: Scored, candidate: Scored, tolerance: float, force: bool
) -> dict[str, Any]:
    """The audit detail of promoting `candidate` over `production`, or PromotionRefused.

    Worse means beyond `tolerance` (absolute) in the metric's bad direction. Versions judged
    on different metrics cannot be compared, so only force promotes across them.
    """
    metric = candidate.primary_metric
    after, before = candidate.metrics[metric], production.metrics.get(metric)
    detail: dict[str, Any] = {
        "gate": {"metric": metric, "candidate": after, "production": before},
        "tolerance": tolerance,
    }
    if production.primary_metric != metric or before is None:
        problem = (
            f"{model}@{candidate.version} is judged on {metric!r} but production "
            f"{model}@{production.version} on {production.primary_metric!r}: they cannot be "
            "compared"
        )
    else:
        higher = HIGHER_IS_BETTER[metric]
        worse = after < before - tolerance if higher else after > before + tolerance
        if not worse:
            return detail
        problem = (
            f"{model}@{candidate.version} has {metric} {after:.6g}, worse than production "
            f"{model}@{production.version} ({before:.6g}) by more than the tolerance "
            f"{tolerance:g} ({'higher' if higher else 'lower'} is better)"
        )
    if not force:
        raise PromotionRefused(
            f"promotion refused: {problem}; to promote it anyway pass force=True with a "
            "reason (CLI: --force --reason '...')"
        )
    return {**detail, "forced": True}


def normalise_weights(weights: dict[str, float]) -> dict[str, float]:
    """Weights scaled to sum 1, zeros dropped (an alias without a weight takes no traffic).

    >>> normalise_weights({"production": 90, "canary": 10})
    {'canary': 0.1, 'production': 0.9}
    """
    if not weights:
        raise RegistryError("traffic weights are empty; give e.g. {'production': 1.0}")
    if SHADOW in weights:
        raise RegistryError(
            f"{SHADOW!r} takes no traffic weight: a shadow model mirrors the traffic (scored on "
            "the side, never answered with); leave it out of the weights"
        )
    for alias, weight in weights.items():
        check_name(alias, "alias")
        number = weight if isinstance(weight, int | float) and not isinstance(weight, bool) else -1
        if not (math.isfinite(number) and number >= 0):
            raise RegistryError(
                f"traffic weight of {alias!r} is {weight!r}; weights are finite numbers >= 0"
            )
    total = float(sum(weights.values()))
    if total <= 0:
        raise RegistryError(f"traffic weights sum to 0 ({weights}); one must be above 0")
    return {alias: weight / total for alias, weight in sorted(weights.items()) if weight > 0}


def check_name(name: str, kind: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(
            f"{kind} name {name!r} is invalid: use a letter, then letters, digits, '_', '-' or "
            "'.' (at most 100 in all), e.g. 'fraud' or 'canary'"
        )
