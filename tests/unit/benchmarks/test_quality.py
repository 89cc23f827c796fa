"""The quality benchmark's own parts (benchmarks/quality.py; the FLAML run itself is a command of its
own): the champion is scored from the written repository exactly as the build scored it, and the
paired bootstrap tells a real difference from none."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.quality import champion_output, paired_bootstrap, verdict
from tests.helpers import BundledBuild


def test_every_variant_answers_from_the_repository_as_in_the_build(cancer_repo: BundledBuild) -> None:
    """Members and ensembles (vote, averages, stack), with the cost-chosen thresholds: the ONNX
    graphs on disk through the contract's combiner give the build's own test outputs."""
    frame = pd.DataFrame(cancer_repo.test_rows)
    built = {m.name: m for m in cancer_repo.result.models if not m.excluded}
    assert cancer_repo.manifest.ensembles, "the build has ensembles to check"
    for name in cancer_repo.manifest.variant_names():
        out, classes = champion_output(cancer_repo.version_dir, frame, name)
        expected = built[name].outputs["test"]
        assert classes == [str(c) for c in cancer_repo.manifest.classes]
        np.testing.assert_array_equal(out.labels, expected.labels, err_msg=name)
        np.testing.assert_allclose(out.proba, expected.proba, atol=1e-6, err_msg=name)
    out, _ = champion_output(cancer_repo.version_dir, frame)
    champion = built[cancer_repo.manifest.routing.champion].outputs["test"]
    np.testing.assert_array_equal(out.labels, champion.labels)


def test_the_paired_bootstrap_finds_a_real_difference_and_none_where_there_is_none() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    sharp = np.column_stack([np.where(y == 0, 0.9, 0.1), np.where(y == 1, 0.9, 0.1)])
    noise = rng.random(300)
    vague = np.column_stack([1 - noise, noise])
    same = paired_bootstrap("binary", y, sharp, sharp)
    assert all(d["diff"] == d["lo"] == d["hi"] == 0.0 for d in same.values())
    assert {verdict(k, d) for k, d in same.items()} == {"level"}
    better = paired_bootstrap("binary", y, sharp, vague)
    assert better["accuracy"]["lo"] > 0 and verdict("accuracy", better["accuracy"]) == "better"
    assert better["log_loss"]["hi"] < 0 and verdict("log_loss", better["log_loss"]) == "better"
    worse = paired_bootstrap(
        "regression", y.astype(float), y + rng.normal(0, 1, 300), y + rng.normal(0, 0.1, 300)
    )
    assert verdict("rmse", worse["rmse"]) == "worse"
