"""`gateway build`: bad input exits 2 with one line on stderr and writes nothing; good input builds.

Everything runs `cli.main.main` in-process; tests/e2e/test_gateway_script.py runs the installed script.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cli.main import main
from contract.verify import verify
from tests.helpers import mixed_frame, tree_snapshot, write_csv

ERROR_PREFIX = "gateway build: error: "


def _one_class(tmp_path: Path) -> list[str]:
    frame = mixed_frame(60).assign(label="pos")
    return ["--data", write_csv(tmp_path, frame), "--target", "label"]


def _too_few_rows(tmp_path: Path) -> list[str]:
    return ["--data", write_csv(tmp_path, mixed_frame(30)), "--target", "label"]


def _text_regression(tmp_path: Path) -> list[str]:
    return ["--data", write_csv(tmp_path, mixed_frame(60)), "--target", "label", "--task", "regression"]


def _empty_file(tmp_path: Path) -> list[str]:
    path = tmp_path / "empty.csv"
    path.write_text("")
    return ["--data", str(path), "--target", "label"]


def _unreadable_file(tmp_path: Path) -> list[str]:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"\x00\x01 not parquet")
    return ["--data", str(path), "--target", "label"]


BAD_INPUT = {
    "unknown family": (
        lambda t: ["--dataset", "iris", "--families", "tree", "unicorn"],
        "--families: unknown family 'unicorn'",
    ),
    "family of another task": (
        lambda t: ["--dataset", "iris", "--families", "ridge"],
        "unknown family 'ridge' for multiclass",
    ),
    "unknown dataset": (lambda t: ["--dataset", "mnist"], "--dataset: unknown dataset 'mnist'"),
    "missing target": (
        lambda t: ["--data", write_csv(t, mixed_frame(60)), "--target", "churned"],
        "--target: column 'churned' not found",
    ),
    "no target with --data": (
        lambda t: ["--data", write_csv(t, mixed_frame(60))],
        "--target: required with --data",
    ),
    "one-class target": (_one_class, "expected at least 2 classes, got 1"),
    "too few rows": (_too_few_rows, "expected at least 40 labelled rows"),
    "text regression target": (_text_regression, "expected a numeric target for regression"),
    "empty file": (_empty_file, "the file is empty"),
    "unreadable file": (_unreadable_file, "cannot read as .parquet"),
    "missing file": (lambda t: ["--data", str(t / "nope.csv"), "--target", "y"], "nope.csv: no such file"),
    "zero budget": (lambda t: ["--dataset", "iris", "--budget", "0"], "--budget: expected a positive number"),
    "zero time budget": (
        lambda t: ["--dataset", "iris", "--time-budget", "0"],
        "--time-budget: expected a positive number of seconds, got 0.0",
    ),
    "halving with a time budget": (
        lambda t: ["--dataset", "iris", "--search", "halving", "--time-budget", "5"],
        "--search halving: expected a trial budget (--budget), not --time-budget",
    ),
    "one cost only": (lambda t: ["--dataset", "breast_cancer", "--fp-cost", "1"], "expected both or neither"),
    "negative cost": (
        lambda t: ["--dataset", "breast_cancer", "--fp-cost", "-1", "--fn-cost", "2"],
        "--fp-cost: expected a positive number, got -1.0",
    ),
    "one fold": (
        lambda t: ["--dataset", "iris", "--cv-folds", "1"],
        "--cv-folds: expected at least 2, got 1",
    ),
    "text column of numbers": (
        lambda t: ["--data", write_csv(t, mixed_frame(60)), "--target", "label", "--text", "amount"],
        "--text 'amount': expected a column of text, got float64 values",
    ),
    "text column not in the table": (
        lambda t: ["--data", write_csv(t, mixed_frame(60)), "--target", "label", "--text", "nope"],
        "--text: column 'nope' not found",
    ),
    "dense family on text": (
        lambda t: ["--dataset", "fortunes", "--families", "random_forest"],
        "--families: unknown family 'random_forest' for multiclass with text columns",
    ),
    "anomaly with three labels": (
        lambda t: ["--dataset", "iris", "--task", "anomaly"],
        "--task anomaly: expected 2 labels in 'target' (normal and anomaly), got 3",
    ),
    "contamination without anomaly": (
        lambda t: ["--dataset", "iris", "--contamination", "0.1"],
        "--contamination: only with --task anomaly",
    ),
    "contamination out of range": (
        lambda t: ["--dataset", "wbc_outliers", "--contamination", "0.7"],
        "--contamination: expected a share in (0, 0.5), got 0.7",
    ),
    "anomaly with text": (
        lambda t: [
            "--data",
            write_csv(t, pd.DataFrame({"x": range(60), "note": [f"a b c {i}" for i in range(60)]})),
            "--task",
            "anomaly",
            "--text",
            "note",
        ],
        "--task anomaly: text columns are not supported (note)",
    ),
    "unsafe name": (
        lambda t: ["--dataset", "iris", "--name", "../escape"],
        "--name: expected letters, digits",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_args, message = BAD_INPUT[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args = make_args(inputs)
    before = tree_snapshot(tmp_path)
    out = tmp_path / "models"

    code = main(["build", *args, "--out", str(out), "--no-learning-curves"])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(ERROR_PREFIX)
    assert message in captured.err
    assert not out.exists()
    assert tree_snapshot(tmp_path) == before


def test_out_that_is_not_a_repository_is_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "my documents"
    out.mkdir()
    (out / "thesis.tex").write_text("\\documentclass{article}\n")
    (out / "iris").mkdir()  # even a folder named like the model is someone else's
    before = tree_snapshot(out)

    code = main(["build", "--dataset", "iris", "--out", str(out), "--budget", "1"])

    err = capsys.readouterr().err
    assert code == 2
    assert (
        err
        == f"{ERROR_PREFIX}--out: {out} is not a model repository (no repository.json; contains iris, thesis.tex)\n"
    )
    assert tree_snapshot(out) == before
    assert not list(out.glob("*/[0-9]*")) and not list(out.glob("**/.staging-*"))


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "models"
    out.write_text("precious")
    assert main(["build", "--dataset", "iris", "--out", str(out)]) == 2
    assert "is a file, expected a model repository directory" in capsys.readouterr().err
    assert out.read_text() == "precious"


@pytest.mark.parametrize(
    "args",
    [
        ["build"],  # neither --data nor --dataset
        ["build", "--dataset", "iris", "--data", "t.csv"],
        ["build", "--dataset", "iris", "--task", "ranking"],
        ["build", "--dataset", "iris", "--budget", "many"],
        ["serve-everything"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*args, "--out", str(tmp_path / "models")] if args[0] == "build" else args)
    assert info.value.code == 2
    assert "usage: gateway" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


# --- a good build ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_good_build_prints_progress_and_the_leaderboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path, mixed_frame().drop(columns=["grade", "amount"]), "churn table.csv")
    out = tmp_path / "models"
    args = ["build", "--data", csv, "--target", "label", "--out", str(out), "--budget", "1"]
    args += ["--families", "tree", "--no-learning-curves", "--jobs", "1", "--cv-folds", "2"]

    code = main(args)

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    version = out / "churn_table" / "1"
    manifest = verify(version)
    assert manifest.name == "churn_table"
    assert [c.name for c in manifest.inputs] == ["mean radius", "width (cm)", "colour", "size"]
    assert "families: dummy, logreg, tree" in captured.out
    assert "Leaderboard: churn_table v1" in captured.out
    assert f"wrote {version}" in captured.out.replace("\n", "")
