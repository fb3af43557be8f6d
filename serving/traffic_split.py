"""Traffic split between a model's aliases, sticky per entity.

Each row's entity key (its join-key values, as the online store joins them) is hashed with
BLAKE2b — stable across processes and restarts, unlike Python's `hash()` — to a point in [0, 1),
which falls in one alias's slice of the cumulative weights. The same entity therefore always
meets the same alias while the weights stand. Production's slice comes last: growing a canary
from 0.1 to 0.2 keeps every entity that was already on the canary there.

>>> aliases, traffic = {"production": 1, "canary": 2}, {"production": 0.9, "canary": 0.1}
>>> split = Split.from_rollout("fraud", aliases, traffic)
>>> split.aliases, split.versions
(('canary', 'production'), (2, 1))
>>> [int(i) for i in split.assign(["u1", "u1"])]  # entity keys (featurestore.keys)
[1, 1]
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from featurestore.models.registry import PRODUCTION, SHADOW

__all__ = ["Split", "unit_interval"]


def unit_interval(salt: str, keys: Sequence[str]) -> npt.NDArray[np.float64]:
    """A stable point in [0, 1) for each key; `salt` (the model name) makes splits of different
    models independent, so one user is not everyone's canary."""
    prefix = salt.encode() + b"\x1f"
    digests = b"".join(
        hashlib.blake2b(prefix + key.encode(), digest_size=8).digest() for key in keys
    )
    # Top 53 bits: exactly representable as float64, so the result is < 1 for every key.
    ints = np.frombuffer(digests, dtype=">u8") >> np.uint64(11)
    return ints.astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class Split:
    """Which alias (and version) serves which slice of the entities of one model."""

    model: str
    aliases: tuple[str, ...]
    versions: tuple[int, ...]
    cumulative: npt.NDArray[np.float64]  # right edge of each alias's slice; the last is 1.0

    @classmethod
    def from_rollout(
        cls, model: str, aliases: Mapping[str, int], traffic: Mapping[str, float]
    ) -> Split | None:
        """The split of a rollout's traffic; None when no alias takes traffic (nothing to serve)."""
        weighted = {
            alias: float(weight)
            for alias, weight in traffic.items()
            if weight > 0 and alias != SHADOW and alias in aliases
        }
        if not weighted:
            return None
        order = sorted(a for a in weighted if a != PRODUCTION)
        if PRODUCTION in weighted:
            order.append(PRODUCTION)
        weights = np.array([weighted[a] for a in order])
        cumulative = np.cumsum(weights / weights.sum())
        cumulative[-1] = 1.0  # no row may fall past the end through rounding
        return cls(model, tuple(order), tuple(aliases[a] for a in order), cumulative)

    def assign(self, keys: Sequence[str]) -> npt.NDArray[np.intp]:
        """Index into `aliases` of each row."""
        if len(self.aliases) == 1:
            return np.zeros(len(keys), dtype=np.intp)
        points = unit_interval(self.model, keys)
        return np.searchsorted(self.cumulative, points, side="right").astype(np.intp)
