"""Atomic repository writes (staging folder, then rename) and the registry's loud verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builders.errors import BuildError
from builders.repository import check_root, existing_versions, publish, staging
from contract.manifest import MANIFEST_FILE, ROOT_MARKER
from contract.verify import RepositoryError, load_manifest, resolve_version, sha256_file, verify
from tests.helpers import BundledBuild, sha, stage_tiny_version, tree_snapshot


def _leftovers(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []


# --- the output root -----------------------------------------------------------------------------


def test_root_may_be_missing_empty_or_a_repository(tmp_path: Path) -> None:
    check_root(tmp_path / "missing")
    check_root(tmp_path)
    (tmp_path / "README.md").write_text("models live here\n")
    (tmp_path / ".gitignore").write_text("*\n")
    check_root(tmp_path)
    (tmp_path / ROOT_MARKER).write_text("{}")
    (tmp_path / "anything").mkdir()
    check_root(tmp_path)
    assert not (tmp_path / "missing").exists()


def test_root_with_foreign_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("\\documentclass{article}")
    (tmp_path / "data").mkdir()
    with pytest.raises(
        BuildError, match=r"is not a model repository \(no repository.json; contains data, thesis.tex\)"
    ):
        check_root(tmp_path)


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "models"
    path.write_text("not a directory")
    with pytest.raises(BuildError, match=r"is a file, expected a model repository directory"):
        check_root(path)


# --- staging and publishing ----------------------------------------------------------------------


def test_a_failure_inside_staging_leaves_no_version_and_no_staging_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="export crashed"), staging(tmp_path, "churn") as tmp:
        assert tmp.parent == tmp_path / "churn"
        assert tmp.name.startswith(".staging-")
        (tmp / "members" / "a").mkdir(parents=True)
        (tmp / "members" / "a" / "model.onnx").write_bytes(b"half written")
        raise RuntimeError("export crashed")

    assert _leftovers(tmp_path / "churn") == []
    assert existing_versions(tmp_path / "churn") == []
    with pytest.raises(RepositoryError, match="no model version found"):
        resolve_version(tmp_path)


def test_publish_numbers_versions_one_two_three(tmp_path: Path) -> None:
    published = []
    for _ in range(3):
        with staging(tmp_path, "tiny") as tmp:
            make_manifest = stage_tiny_version(tmp)
            published.append(publish(tmp, make_manifest))

    assert [p.name for p in published] == ["1", "2", "3"]
    assert _leftovers(tmp_path / "tiny") == ["1", "2", "3"]
    assert json.loads((tmp_path / ROOT_MARKER).read_text()) == {"format_version": 1}
    assert [load_manifest(p).version for p in published] == [1, 2, 3]
    assert resolve_version(tmp_path) == published[-1]
    assert resolve_version(tmp_path / "tiny") == published[-1]


def test_publish_checksums_every_file_but_the_manifest(tmp_path: Path) -> None:
    with staging(tmp_path, "tiny") as tmp:
        make_manifest = stage_tiny_version(tmp)
        (tmp / "report.md").write_text("# report\n")
        version_dir = publish(tmp, make_manifest)

    manifest = verify(version_dir)
    on_disk = {
        str(p.relative_to(version_dir))
        for p in version_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    }
    assert set(manifest.files) == on_disk
    assert manifest.files["report.md"] == sha(b"# report\n")
    assert all(sha256_file(version_dir / rel) == digest for rel, digest in manifest.files.items())


def test_publish_skips_versions_another_build_already_took(tmp_path: Path) -> None:
    (tmp_path / ROOT_MARKER).write_text('{"format_version": 1}\n')
    (tmp_path / "tiny" / "7").mkdir(parents=True)
    (tmp_path / "tiny" / "notes").mkdir()
    with staging(tmp_path, "tiny") as tmp:
        version_dir = publish(tmp, stage_tiny_version(tmp))
    assert version_dir.name == "8"
    assert existing_versions(tmp_path / "tiny") == [7, 8]


# --- verification --------------------------------------------------------------------------------


@pytest.fixture
def tiny_version(tmp_path: Path) -> Path:
    with staging(tmp_path / "repo", "tiny") as tmp:
        return publish(tmp, stage_tiny_version(tmp))


def test_verify_detects_a_tampered_model_file(tiny_version: Path) -> None:
    target = tiny_version / "members" / "beta" / "model.onnx"
    target.write_bytes(target.read_bytes() + b"\x00")
    with pytest.raises(RepositoryError, match=r"members/beta/model.onnx: sha256 mismatch \(manifest "):
        verify(tiny_version)


def test_verify_detects_a_missing_file(tiny_version: Path) -> None:
    (tiny_version / "members" / "alpha" / "model.onnx").unlink()
    with pytest.raises(
        RepositoryError, match=r"members/alpha/model.onnx: missing \(listed in manifest.json\)"
    ):
        verify(tiny_version)


def test_verify_detects_a_broken_card(tiny_version: Path) -> None:
    card = tiny_version / "members" / "alpha" / "card.json"
    card.write_text("{}")
    # The card is checksummed too, so the checksum catches it first.
    with pytest.raises(RepositoryError, match=r"members/alpha/card.json: sha256 mismatch"):
        verify(tiny_version)


def test_verify_detects_an_invalid_manifest(tiny_version: Path) -> None:
    path = tiny_version / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["routing"]["champion"] = "ghost"
    path.write_text(json.dumps(data))
    with pytest.raises(RepositoryError, match=r"manifest.json: invalid manifest at \(root\): .*ghost"):
        verify(tiny_version)


@pytest.mark.slow
def test_verify_detects_tampering_in_a_built_repository(iris_repo: BundledBuild, tmp_path: Path) -> None:
    copy = tmp_path / "iris" / "1"
    shutil.copytree(iris_repo.version_dir, copy)
    assert verify(copy) == iris_repo.manifest
    before = tree_snapshot(iris_repo.version_dir)

    member = iris_repo.manifest.members[1]
    onnx_path = copy / member.path
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(RepositoryError, match=rf"{member.path}: sha256 mismatch"):
        verify(copy)

    stack = next(e for e in iris_repo.manifest.ensembles if e.meta_model)
    shutil.copy(iris_repo.version_dir / member.path, onnx_path)
    assert stack.meta_model is not None
    (copy / stack.meta_model).unlink()
    with pytest.raises(RepositoryError, match=rf"{stack.meta_model}: missing"):
        verify(copy)
    assert tree_snapshot(iris_repo.version_dir) == before


@pytest.mark.parametrize(
    "escape", ["../../outside.onnx", "/etc/hostname", "members/../../x.onnx", "link.onnx"]
)
def test_verify_refuses_member_paths_outside_the_version_folder(tiny_version: Path, escape: str) -> None:
    """A manifest names files of its own version only (no `..`, absolute paths or symlinks out), and
    the error does not say whether the outside file exists."""
    import json

    (tiny_version / "link.onnx").symlink_to("/etc/hostname")
    path = tiny_version / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["members"][0]["path"] = escape
    path.write_text(json.dumps(data))
    with pytest.raises(
        RepositoryError, match=r"members\[alpha\]\.path .*expected a file inside its version folder"
    ) as err:
        verify(tiny_version)
    assert "missing" not in str(err.value) and "sha256" not in str(err.value)
