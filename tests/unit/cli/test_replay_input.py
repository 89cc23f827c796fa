"""`gateway replay` input: drift specs parse, apply and fail clearly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cli.replay import drift_specs as drift


def test_drift_specs_parse_and_apply() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "a", "b"], "y": ["p", "q", "p", "q"]})
    ops = drift.parse("shift:x:10,scale:x:2,segment:c=a", frame, "y")
    out = drift.apply(ops, frame, "y", np.random.default_rng(0))
    assert out["x"].tolist() == [22.0, 26.0] and set(out["c"]) == {"a"}
    flipped = drift.apply(drift.parse("flip:1", frame, "y"), frame, "y", np.random.default_rng(0))
    assert (flipped["y"] != frame["y"]).all()
    blank = drift.apply(drift.parse("missing:c:1", frame, "y"), frame, "y", np.random.default_rng(0))
    assert blank["c"].isna().all()
    for bad, fragment in [
        ("scale:nope:2", "no column"),
        ("scale:c:2", "not numeric"),
        ("shift:x:abc", "number"),
        ("missing:x:2", "fraction"),
        ("wobble:x:1", "expected"),
        ("segment:c", "COLUMN=VALUE"),
        ("scale:y:2", "target"),
    ]:
        with pytest.raises(drift.DriftError, match=fragment):
            drift.parse(bad, frame, "y")
