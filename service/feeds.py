"""Raw column values to onnxruntime feeds: one [N, 1] tensor per input column.

Builders use this for offline evaluation; the service builds the same tensors from validated JSON
records in service.records (column-wise, for speed). tests/service/test_http.py proves the two agree:
every variant served online reproduces its card's offline test metrics exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service.manifest import ColumnSpec

MISSING_CATEGORY = ""
"""skl2onnx's string imputer matches "" as missing (it cannot match NaN in a string tensor)."""


def column_tensor(spec: ColumnSpec, values: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[Any]:
    """One column's values as the tensor its graph input expects."""
    if spec.kind == "numeric":
        arr = np.asarray(
            [np.nan if v is None else v for v in values] if not isinstance(values, np.ndarray) else values,
            dtype=np.float32,
        )
        return arr.reshape(-1, 1)
    out = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        out[i, 0] = MISSING_CATEGORY if v is None or (isinstance(v, float) and v != v) else str(v)
    return out


def make_feeds(
    columns: Sequence[ColumnSpec], data: Mapping[str, Sequence[Any]]
) -> dict[str, npt.NDArray[Any]]:
    """Feeds keyed by ONNX input name from column values keyed by column name."""
    return {spec.tensor: column_tensor(spec, data[spec.name]) for spec in columns}
