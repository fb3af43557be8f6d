"""The online store's sketches, computed offline: DuckDB functions that a training-set query
calls so a distinct count equals what Redis answers for the same events (see hyperloglog.py).

`fstore_hll_code_<type>(value)` is a value's HyperLogLog (register, rank) code, and
`fstore_hll_estimate(codes)` the PFCOUNT of a sketch holding those codes; a window's count is
`fstore_hll_estimate(list(fstore_hll_code_<type>(column)) OVER window)` (a repeated code changes
nothing, and DuckDB's windowed `list(DISTINCT …)` costs far more than the repeats).

Percentiles likewise (percentiles.py): `fstore_ddsketch_key(value, α)` is a value's bucket key,
by the writer's own numpy function, and `fstore_ddsketch_quantile(keys, q, α)` the quantile
Redis's summed bucket counts give; a window's is
`fstore_ddsketch_quantile(list(fstore_ddsketch_key(column, α)) OVER window, q, α)`.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from duckdb.sqltypes import BIGINT, BOOLEAN, DOUBLE, VARCHAR, DuckDBPyType

from featurestore.definitions import ValueType
from featurestore.frequencies import count_values, top_values
from featurestore.hyperloglog import code, estimates, member
from featurestore.percentiles import bucket_keys, quantiles_of_rows

__all__ = [
    "distinct_count_sql",
    "percentile_keys_sql",
    "percentile_sql",
    "register_sketches",
    "top_k_sql",
]

_TOP_K = "fstore_top_k"

_KEY = "fstore_ddsketch_key"
_QUANTILE = "fstore_ddsketch_quantile"

_ESTIMATE = "fstore_hll_estimate"
_INPUT_TYPES: dict[ValueType, DuckDBPyType] = {
    ValueType.STRING: VARCHAR,
    ValueType.INT64: BIGINT,
    ValueType.FLOAT64: DOUBLE,
    ValueType.BOOL: BOOLEAN,
}


def distinct_count_sql(column_sql: str, kind: ValueType, window: str) -> str:
    """The SQL of an `approx_count_distinct` over `window`, as Redis would count it."""
    return f"{_ESTIMATE}(list({_code_function(kind)}({column_sql})) OVER {window})"


def percentile_keys_sql(column_sql: str, accuracy: float, window: str) -> str:
    """The SQL of a window's percentile sketch: the list of its values' bucket keys."""
    return f"list({_KEY}({column_sql}::DOUBLE, {accuracy!r}::DOUBLE)) OVER {window}"


def percentile_sql(keys_sql: str, q: float, accuracy: float) -> str:
    """The SQL of a q-quantile of a sketch made by `percentile_keys_sql`, as Redis answers."""
    return f"{_QUANTILE}({keys_sql}, {q!r}::DOUBLE, {accuracy!r}::DOUBLE)"


def top_k_sql(values_sql: str, k: int) -> str:
    """The SQL of a window's `top_k`, from the list of its values (`list(column) OVER w`)."""
    return f"{_TOP_K}({values_sql}, {int(k)})"


def register_sketches(con: duckdb.DuckDBPyConnection) -> None:
    """Make the sketch functions callable on `con` (once per connection)."""
    con.create_function(  # type: ignore[call-overload]
        _TOP_K,
        _top_k,
        [DuckDBPyType(list[str]), BIGINT],
        DuckDBPyType(list[str]),
        type="arrow",
        null_handling="special",
    )
    con.create_function(  # type: ignore[call-overload]
        _KEY,
        _percentile_keys,
        [DOUBLE, DOUBLE],
        BIGINT,
        type="arrow",
        null_handling="special",
    )
    con.create_function(  # type: ignore[call-overload]
        _QUANTILE,
        _percentiles,
        [DuckDBPyType(list[int]), DOUBLE, DOUBLE],
        DOUBLE,
        type="arrow",
        null_handling="special",
    )
    for kind, sql_type in _INPUT_TYPES.items():
        con.create_function(  # type: ignore[call-overload]  # an arrow UDF's Callable
            _code_function(kind),
            _codes_of(kind),
            [sql_type],
            BIGINT,
            type="arrow",
            null_handling="special",
        )
    con.create_function(  # type: ignore[call-overload]
        _ESTIMATE,
        _estimates,
        [DuckDBPyType(list[int])],
        BIGINT,
        type="arrow",
        null_handling="special",
    )


def _code_function(kind: ValueType) -> str:
    return f"fstore_hll_code_{kind.value}"


def _codes_of(kind: ValueType) -> Callable[[pa.Array], pa.Array]:
    def codes(values: pa.Array) -> pa.Array:
        seen: dict[object, int] = {}  # a column repeats its values: hash each once per call
        out: list[int | None] = []
        for value in values.to_pylist():
            if value is None:
                out.append(None)
                continue
            found = seen.get(value)
            if found is None:
                found = seen[value] = code(member(kind, value))
            out.append(found)
        return pa.array(out, pa.int64())

    return codes


def _estimates(lists: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    rows = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    flat = pc.list_flatten(lists)
    present = pc.is_valid(flat).to_numpy(zero_copy_only=False)
    codes = flat.fill_null(0).to_numpy().astype(np.int64)
    return pa.array(estimates(rows[present], codes[present], len(lists)), pa.int64())


def _constant(values: pa.Array | pa.ChunkedArray) -> float:
    """The one value of a constant argument (DuckDB passes it once per row)."""
    first = values[0].as_py() if len(values) else None
    if first is None:
        raise ValueError("a sketch parameter must be a constant, not NULL")
    return float(first)


def _percentile_keys(
    values: pa.Array | pa.ChunkedArray, accuracy: pa.Array | pa.ChunkedArray
) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    present = pc.is_valid(values).to_numpy(zero_copy_only=False)
    numbers = values.fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    keys = bucket_keys(numbers, _constant(accuracy))
    return pa.array(keys, pa.int64(), mask=~present)


def _percentiles(
    lists: pa.Array | pa.ChunkedArray,
    q: pa.Array | pa.ChunkedArray,
    accuracy: pa.Array | pa.ChunkedArray,
) -> pa.Array:
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    rows = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    flat = pc.list_flatten(lists)
    present = pc.is_valid(flat).to_numpy(zero_copy_only=False)
    keys = flat.fill_null(0).to_numpy().astype(np.int64)
    out = quantiles_of_rows(
        rows[present], keys[present], len(lists), _constant(q), _constant(accuracy)
    )
    return pa.array(out, pa.float64(), mask=np.isnan(out))


def _top_k(lists: pa.Array | pa.ChunkedArray, k: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Per row, `top_values` of its window's values (frequencies.py: the rule online uses)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    most = int(_constant(k))
    return pa.array(
        [top_values(count_values(row or []), most) for row in lists.to_pylist()],
        pa.list_(pa.string()),
    )
