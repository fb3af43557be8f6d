"""The training-set benchmark's checks: ours against the floor value by value, both against a
numpy brute force of docs/semantics.md, and ours against Feast where Feast can compute a value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from training_set_workload import FEATURES, LATEST, TILE_US, WINDOWS, Events, user_names

__all__ = ["brute_force", "check_brute_force", "close", "compare_feast", "compare_outputs"]


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def compare_outputs(
    ours: Path, floor: Path, sample: np.ndarray, features: list[str] = FEATURES
) -> dict[str, Any]:
    """Ours and the floor on the sampled rows: the same label columns and the same values."""
    a = pq.read_table(ours).take(pa.array(sample))
    b = pq.read_table(floor).take(pa.array(sample))
    wrong: dict[str, int] = {}
    for name in ["user_id", "event_timestamp", "label", *features]:
        left, right = a.column(name).to_pylist(), b.column(name).to_pylist()
        bad = sum(
            not (x == y or (isinstance(x, float) and close(x, y)))
            for x, y in zip(left, right, strict=True)
        )
        if bad:
            wrong[name] = bad
    return {
        "rows_compared": len(sample),
        "values_compared": len(sample) * len(features),
        "wrong": wrong,
    }


def brute_force(events: Events, users: int, labels: Path, rows: np.ndarray) -> list[dict[str, Any]]:
    """docs/semantics.md literally, with numpy, for the sampled label rows."""
    table = pq.read_table(labels).take(pa.array(rows))
    names = {name: i for i, name in enumerate(user_names(users).to_pylist())}
    by_user = np.argsort(events.user, kind="stable")  # stable: time order within a user
    starts = np.searchsorted(events.user[by_user], np.arange(users + 1))
    out = []
    for user, when in zip(
        table.column("user_id").to_pylist(),
        pc.cast(table.column("event_timestamp"), pa.int64()).to_pylist(),
        strict=True,
    ):
        u = names[user]
        mine = by_user[starts[u] : starts[u + 1]]
        ts, amount = events.ts[mine], events.amount[mine]
        values: dict[str, Any] = {}
        for window, tiles in WINDOWS.items():
            inside = (ts // TILE_US >= when // TILE_US - tiles + 1) & (ts <= when)
            chosen = amount[inside]
            values[f"count_{window}"] = int(inside.sum())
            values[f"amount_sum_{window}"] = float(chosen.sum())
            values[f"amount_max_{window}"] = float(chosen.max()) if len(chosen) else None
            # Times are unique here, so the newest event needs no tie-break.
            values[f"amount_last_{window}"] = (
                float(chosen[np.argmax(ts[inside])]) if len(chosen) else None
            )
        out.append(values)
    return out


def check_brute_force(
    output: Path, events: Events, users: int, labels: Path, rows: np.ndarray
) -> dict[str, int]:
    got = pq.read_table(output).take(pa.array(rows)).to_pylist()
    want = brute_force(events, users, labels, rows)
    wrong = sum(
        not close(g[name], w[name]) for g, w in zip(got, want, strict=True) for name in FEATURES
    )
    return {"values_compared": len(rows) * len(FEATURES), "wrong": wrong}


def compare_feast(ours: Path, feast: Path) -> dict[str, Any]:
    """Feast's TTL window [t - W, t] holds ours, [(floor(t/T) - n + 1)·T, t]; so where ours has
    a value Feast must have the same one, and where only Feast has one, its event lies between
    t - W and our tile-aligned far edge."""
    theirs = pq.read_table(feast)
    rows = np.asarray(theirs.column("row").to_numpy())
    mine = pq.read_table(ours, columns=LATEST).take(pa.array(rows))
    out: dict[str, Any] = {"rows": len(rows)}
    for window in WINDOWS:
        a = mine.column(f"amount_last_{window}").to_pylist()
        b = theirs.column(f"last_{window}__amount").to_pylist()
        out[window] = {
            "equal": sum(close(x, y) for x, y in zip(a, b, strict=True)),
            "only_feast": sum(x is None and y is not None for x, y in zip(a, b, strict=True)),
            "differ": sum(x is not None and not close(x, y) for x, y in zip(a, b, strict=True)),
        }
    return out
