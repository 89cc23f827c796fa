"""The installed `gateway` script, run for real as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import mixed_frame, tree_snapshot, write_csv

GATEWAY = Path(sys.executable).parent / "gateway"
ERROR_PREFIX = "gateway build: error: "


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GATEWAY), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_script_refuses_an_unknown_family(tmp_path: Path) -> None:
    proc = _run(["build", "--dataset", "iris", "--families", "unicorn", "--out", "models"], tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{ERROR_PREFIX}--families: unknown family 'unicorn'; expected some of ")
    assert list(tmp_path.iterdir()) == []


def test_script_leaves_a_foreign_out_directory_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    before = tree_snapshot(out)
    csv = write_csv(tmp_path, mixed_frame(80))

    proc = _run(["build", "--data", csv, "--target", "label", "--out", str(out)], tmp_path)

    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert "is not a model repository" in proc.stderr
    assert tree_snapshot(out) == before
