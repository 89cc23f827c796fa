"""Writing a model repository version atomically: a staging folder, then one rename.

A failed build removes its staging folder, so no partial version is ever visible; readers only see
folders named by an integer, and those are complete (manifest written last, fsynced, then renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from builders.errors import BuildError
from contract.manifest import MANIFEST_FILE, ROOT_MARKER, Manifest
from contract.verify import sha256_file

IGNORED_ROOT_ENTRIES = {"README.md", ".gitignore", ".gitkeep", ROOT_MARKER}


def check_root(root: Path) -> None:
    """A repository root is missing, empty, or carries repository.json; anything else is refused."""
    if root.exists() and not root.is_dir():
        raise BuildError(f"--out: {root} is a file, expected a model repository directory")
    if not root.exists() or (root / ROOT_MARKER).is_file():
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name not in IGNORED_ROOT_ENTRIES)
    if foreign:
        raise BuildError(
            f"--out: {root} is not a model repository (no {ROOT_MARKER}; contains {', '.join(foreign[:5])})"
        )


def existing_versions(model_dir: Path) -> list[int]:
    """Integer version folders of one model name, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


@contextmanager
def staging(root: Path, name: str) -> Iterator[Path]:
    """A private folder beside the versions; removed unless publish() renamed it."""
    check_root(root)
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    marker = root / ROOT_MARKER
    if not marker.exists():
        marker.write_text(json.dumps({"format_version": 1}) + "\n")
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; a serving user other than the builder must read it
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        # A first build that failed leaves no empty model folder behind either.
        with contextlib.suppress(OSError):
            model_dir.rmdir()


def publish(tmp: Path, make_manifest: Callable[[int, dict[str, str]], Manifest]) -> Path:
    """Checksum every staged file, write the manifest for the next free version, rename into place."""
    files = {
        str(p.relative_to(tmp)): sha256_file(p)
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    model_dir = tmp.parent
    for _ in range(100):
        version = (existing_versions(model_dir) or [0])[-1] + 1
        manifest = make_manifest(version, files)
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        _fsync_tree(tmp)
        target = model_dir / str(version)
        try:
            os.rename(tmp, target)  # atomic; fails if another build took this version meanwhile
        except OSError:
            if target.exists():
                continue
            raise
        dir_fd = os.open(model_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return target
    raise RuntimeError(f"{model_dir}: could not claim a free version number")
