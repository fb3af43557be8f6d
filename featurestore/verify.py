"""Online/offline consistency: the same (entity, time) points read from Redis and computed from
the offline log must agree — the proof that training data equals what serving returns.

Points are sampled where the online tiles are exact (docs/semantics.md): at or after the
entity's newest applied event — for every window kind, the lifetime window's state included.
Every function must agree to a relative 1e-9, distinct counts included: offline reproduces
Redis's HyperLogLog bit for bit (featurestore/hyperloglog.py). Percentiles must be equal, no
tolerance: both sides map values to the same buckets with one function and read the same
quantile off them (featurestore/percentiles.py).

The log is never loaded: DuckDB computes each entity's newest event time and draws the sample
(the entities with the smallest hash of (seed, key): the same sample for the same seed and log).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from featurestore.config import Settings
from featurestore.definitions import Function
from featurestore.keys import entity_key
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import TIMESTAMP, OfflineStore, sql_ident
from featurestore.online import OnlineStore, read_features
from featurestore.registry import RegisteredView
from featurestore.tiles import TileLayout

__all__ = [
    "FeatureCheck",
    "VerifyReport",
    "verify_view",
]

EXACT_TOLERANCE = 1e-9


@dataclass
class FeatureCheck:
    feature: str
    compared: int = 0
    mismatched: int = 0
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched / self.compared if self.compared else 0.0


@dataclass
class VerifyReport:
    view: str
    version: int
    points: int
    checks: list[FeatureCheck]
    quarantined: list[str] = field(default_factory=list)  # unreadable log files moved aside

    @property
    def mismatch_rate(self) -> float:
        compared = sum(c.compared for c in self.checks)
        return sum(c.mismatched for c in self.checks) / compared if compared else 0.0


def verify_view(
    settings: Settings,
    registered: RegisteredView,
    sample: int = 1000,
    as_of_us: int | None = None,
    seed: int = 0,
) -> VerifyReport:
    view, version = registered.view, registered.version
    offline = OfflineStore(settings.offline)
    checks = [FeatureCheck(name) for name in view.feature_names()]
    exact = {f.name for f in TileLayout(view).features if f.function is Function.APPROX_PERCENTILE}
    points = _sample_points(offline, registered, sample, as_of_us, seed)
    if not points:
        return VerifyReport(view.name, version, 0, checks, _moved(offline))
    layout = TileLayout(view)

    by_time: dict[int, list[int]] = {}
    for i, (_keys, t) in enumerate(points):
        by_time.setdefault(t, []).append(i)
    store = OnlineStore(settings.redis)
    online_values: list[dict[str, Any]] = [{} for _ in points]
    for t, indexes in by_time.items():
        keys = [entity_key(points[i][0]) for i in indexes]
        [rows] = read_features(store, [(view.name, version, layout, keys)], t)
        for i, row in zip(indexes, rows, strict=True):
            online_values[i] = {name: value.value for name, value in row.items()}

    rows_table = pa.table(
        {
            **{key: [p[0][j] for p in points] for j, key in enumerate(view.join_keys)},
            "event_timestamp": pa.array([p[1] for p in points], pa.timestamp("us", tz="UTC")),
        }
    )
    query = HistoricalQuery(offline, rows_table, [(registered, n) for n in view.feature_names()])
    offline_values = query.to_arrow().to_pylist()

    for check in checks:
        for point, online, row in zip(points, online_values, offline_values, strict=True):
            _compare(
                check, online[check.feature], row[check.feature], point, check.feature in exact
            )
    return VerifyReport(view.name, version, len(points), checks, _moved(offline))


def _moved(offline: OfflineStore) -> list[str]:
    return [str(q) for q in offline.quarantined]


def _compare(
    check: FeatureCheck,
    online: Any,
    offline: Any,
    point: tuple[tuple[object, ...], int],
    exact: bool = False,
) -> None:
    check.compared += 1
    if online is None or offline is None:
        same = online is None and offline is None
        diff = rel = 0.0 if same else float("inf")
    elif isinstance(online, str | list) or isinstance(offline, str | list):  # strings, last_n
        same = online == offline
        diff = rel = 0.0 if same else float("inf")
    else:
        diff = abs(online - offline)
        rel = diff / max(abs(online), abs(offline)) if diff else 0.0
        same = online == offline or (
            not exact and (diff <= EXACT_TOLERANCE or rel <= EXACT_TOLERANCE)
        )
    check.max_abs_diff = max(check.max_abs_diff, diff)
    check.max_rel_diff = max(check.max_rel_diff, rel)
    if not same:
        check.mismatched += 1
        if len(check.examples) < 3:
            check.examples.append(f"{point}: online {online}, offline {offline}")


def _sample_points(
    offline: OfflineStore,
    registered: RegisteredView,
    sample: int,
    as_of_us: int | None,
    seed: int,
) -> list[tuple[tuple[object, ...], int]]:
    """(entity key values, time) pairs at or after each sampled entity's newest event."""
    keys = ", ".join(sql_ident(k) for k in registered.view.join_keys)  # quoted: no injection
    chosen = offline.read_sql(
        registered.name,
        registered.version,
        f"WITH newest AS (SELECT {keys}, max(epoch_us({TIMESTAMP})) AS __newest "  # noqa: S608
        f"FROM log GROUP BY ALL) "
        f"SELECT {keys}, __newest, max(__newest) OVER () AS __now FROM newest "
        f"ORDER BY hash({int(seed)}, {keys}), {keys} LIMIT {int(sample)}",
    )
    if chosen is None or chosen.num_rows == 0:
        return []
    rows = chosen.to_pylist()
    now: int = as_of_us if as_of_us is not None else rows[0]["__now"]
    rng = random.Random(seed)  # noqa: S311 - sampling, not secrets
    points: list[tuple[tuple[object, ...], int]] = []
    for row in rows:
        key = tuple(row[k] for k in registered.view.join_keys)
        if row["__newest"] > now:
            continue  # online tiles are exact only at or after the entity's newest event
        points.append((key, now))
        points.append((key, rng.randint(row["__newest"], now)))
    return points
