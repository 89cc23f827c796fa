"""The service's fast feed builder (JSON records) against the builders' one: the same tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from contract.feeds import make_feeds
from contract.manifest import Manifest
from service.core.requests import records_to_feeds
from service.errors import InvalidField


@pytest.fixture
def manifest(manifest_dict: dict[str, Any]) -> Manifest:
    manifest_dict["inputs"] = [
        {"name": "a", "tensor": "a", "kind": "numeric"},
        {"name": "b c", "tensor": "b_c", "kind": "numeric"},
        {"name": "colour", "tensor": "colour", "kind": "categorical", "categories": ["red"]},
    ]
    return Manifest.model_validate(manifest_dict)


@pytest.mark.parametrize(
    "records",
    [
        [{"a": 1.5, "b c": 2, "colour": "red"}],  # no missing value: the Python range check
        [{"a": None, "b c": 2, "colour": None}],  # missing values: the array path
        [{"a": 16777217, "b c": -3.4e38, "colour": "x"}, {"a": 0.1, "b c": 1e-40, "colour": "red"}],
    ],
)
def test_json_records_and_builder_columns_give_identical_feeds(
    manifest: Manifest, records: list[dict[str, Any]]
) -> None:
    online = records_to_feeds(manifest, records, 64)
    columns = {c.name: [r[c.name] for r in records] for c in manifest.inputs}
    offline = make_feeds(manifest.inputs, columns)
    assert list(online) == list(offline) == ["numeric", "colour"]
    assert online["numeric"].dtype == np.float32 and online["numeric"].shape == (len(records), 2)
    np.testing.assert_array_equal(online["numeric"], offline["numeric"])
    assert online["colour"].tolist() == offline["colour"].tolist()


@pytest.mark.parametrize("value", [3.5e38, -1e300])
def test_numbers_beyond_float32_are_refused_on_both_paths(manifest: Manifest, value: float) -> None:
    for other in (1.0, None):  # without and with a missing value in the same batch
        records = [{"a": other, "b c": 1.0, "colour": "red"}, {"a": 1.0, "b c": value, "colour": "red"}]
        with pytest.raises(InvalidField, match=r"records\[1\]\.b c: expected a finite number \(float32"):
            records_to_feeds(manifest, records, 64)
