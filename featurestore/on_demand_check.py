"""Definition-time check of a request-time feature: its function, run on a few synthetic rows.

`fstore apply` (`load_repo`) runs each on-demand feature's function once on `SYNTHETIC_ROWS`
rows of correctly typed inputs, with a missing value wherever an input may be missing (view
features and float64 request fields: NaN; string request fields: None), through the same
output checks as a read (`compute`). A function that reads an input it does not declare,
raises, or returns the wrong outputs, types or lengths fails before it is registered, with a
message naming the feature and the fix, instead of on the first request.

>>> from featurestore.on_demand import RequestSource, on_demand_feature
>>> txn = RequestSource(name="txn", schema={"amount": "float64"})
>>> @on_demand_feature(request=[txn], outputs={"doubled": "float64"})
... def doubled(inputs):
...     return {"doubled": inputs["amount"] * 2}
>>> check_function(doubled)
>>> synthetic_inputs(doubled)["amount"]
array([1. , 2.5, nan])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from featurestore.definitions import ValueType
from featurestore.errors import DefinitionError, OnDemandError
from featurestore.on_demand import OnDemandFeature, compute

__all__ = ["SYNTHETIC_ROWS", "check_function", "synthetic_inputs"]

SYNTHETIC_ROWS = 3
# One column per request field type; the last row holds the missing value where one may come.
_REQUEST_VALUES: dict[ValueType, list[Any]] = {
    ValueType.FLOAT64: [1.0, 2.5, None],
    ValueType.INT64: [1, 2, 3],
    ValueType.BOOL: [True, False, True],
    ValueType.STRING: ["a", "b", None],
}
_VIEW_VALUES = [1.0, 2.0, np.nan]  # view features arrive as float64, NaN when missing
_DTYPES = {ValueType.FLOAT64: np.float64, ValueType.INT64: np.int64, ValueType.BOOL: np.bool_}


def synthetic_inputs(feature: OnDemandFeature) -> dict[str, npt.NDArray[Any]]:
    """The inputs `check_function` runs the function on, typed as a read converts them."""
    inputs: dict[str, npt.NDArray[Any]] = {}
    for field, kind in feature.request_fields().items():
        values = _REQUEST_VALUES[kind]
        if kind is ValueType.STRING:
            inputs[field] = np.asarray(values, dtype=object)
        else:
            inputs[field] = np.asarray(values, dtype=_DTYPES[kind])
    for ref in feature.features:
        inputs[ref.rsplit(":", 1)[-1]] = np.asarray(_VIEW_VALUES, dtype=np.float64)
    return inputs


def check_function(feature: OnDemandFeature) -> None:
    """Raise `DefinitionError` naming the feature, the problem and the fix when its function
    fails on the synthetic rows or returns other outputs, types or lengths than it declares."""
    inputs = synthetic_inputs(feature)
    try:
        with np.errstate(all="ignore"):  # a division by a synthetic value is not the point
            compute(feature, inputs, SYNTHETIC_ROWS)
    except OnDemandError as exc:
        cause = exc.__cause__
        declared = ", ".join(feature.input_names())
        if isinstance(cause, KeyError) and cause.args and cause.args[0] not in inputs:
            unknown = cause.args[0]
            raise DefinitionError(
                f"on-demand feature {feature.name!r} reads input {unknown!r}, which it does not "
                f"declare (its inputs: {declared}); add the field to a RequestSource in "
                f"`request=` or the view feature `view:{unknown}` to `features=`, or fix the "
                "name the function reads"
            ) from None
        shown = ", ".join(f"{name}={column.tolist()}" for name, column in inputs.items())
        raise DefinitionError(
            f"{exc} (at apply time, run on {SYNTHETIC_ROWS} synthetic rows: {shown}); fix the "
            "function: it must return a dict of its declared outputs "
            f"({_outputs(feature)}), one value per row, for any row of its inputs, missing "
            "values included (NaN in view features and float64 fields, None in string fields)"
        ) from None


def _outputs(feature: OnDemandFeature) -> str:
    return ", ".join(f"{name}: {kind}" for name, kind in feature.outputs.items())
