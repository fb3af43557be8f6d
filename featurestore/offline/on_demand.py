"""Training sets with on-demand features: the view features point-in-time (historical.py),
then each on-demand function over the whole set's columns, the entity rows carrying the request
fields. The function and its input conversion are the ones serving runs (featurestore/on_demand.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.errors import RequestError
from featurestore.offline.historical import HistoricalQuery
from featurestore.offline.log import OfflineStore
from featurestore.on_demand import F64, evaluate
from featurestore.registry import FeaturePlan

__all__ = ["historical_with_on_demand"]


def historical_with_on_demand(
    offline: OfflineStore,
    entity_rows: Any,
    plan: FeaturePlan,
    timestamp_column: str = "event_timestamp",
    full_feature_names: bool = False,
    statuses: bool = False,
) -> pa.Table:
    """The training set of `plan`'s asked refs, in memory (on-demand outputs need every input
    column at once); an on-demand output's status is ok, or missing where it is NaN."""
    rows = _arrow(entity_rows)
    if plan.views:
        query = HistoricalQuery(
            offline,
            rows,
            list(plan.views.values()),
            timestamp_column=timestamp_column,
            full_feature_names=True,
            statuses=statuses,
        )
        read = query.to_arrow()
    else:
        read = rows
    view_columns = {
        key: f"{registered.name}__{feature}" for key, (registered, feature) in plan.views.items()
    }
    n = rows.num_rows
    request = {name: _column(rows, name) for name in rows.column_names}
    outputs: dict[str, dict[str, F64]] = {}
    for key, registered in plan.on_demand.items():
        inputs = {
            ref: _float(read.column(view_columns[ref])) for ref in registered.feature.features
        }
        outputs[key] = evaluate(registered.feature, request, inputs, n)
    names = [
        f"{asked.key.split('@')[0]}__{asked.feature}" if full_feature_names else asked.feature
        for asked in plan.asked
    ]
    clashes = sorted({c for c in names if names.count(c) > 1 or c in rows.column_names})
    if clashes:
        raise RequestError(
            f"feature columns {clashes} clash with each other or with the entity columns; "
            "pass full_feature_names=True to name them view__feature"
        )
    table = rows
    for asked, name in zip(plan.asked, names, strict=True):
        if asked.on_demand is None:
            source = view_columns[asked.key]
            table = table.append_column(name, read.column(source))
            if statuses:
                table = table.append_column(f"{name}__status", read.column(f"{source}__status"))
            continue
        values = outputs[asked.key.rsplit(":", 1)[0]][asked.feature]
        missing = np.isnan(values)
        table = table.append_column(name, pa.array(values, pa.float64(), mask=missing))
        if statuses:
            table = table.append_column(
                f"{name}__status", pa.array(np.where(missing, "missing", "ok"), pa.string())
            )
    return table


def _arrow(entity_rows: Any) -> pa.Table:
    if isinstance(entity_rows, pa.Table):
        return entity_rows
    if isinstance(entity_rows, str | Path):
        return pq.read_table(entity_rows)
    if hasattr(entity_rows, "columns") and hasattr(entity_rows, "to_numpy"):
        return pa.Table.from_pandas(entity_rows, preserve_index=False)
    raise RequestError(
        "entity rows must be a pandas DataFrame, a pyarrow Table or a Parquet path, "
        f"not {type(entity_rows).__name__}"
    )


def _column(table: pa.Table, name: str) -> Any:
    return table.column(name).to_numpy(zero_copy_only=False)


def _float(column: pa.ChunkedArray) -> F64:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
