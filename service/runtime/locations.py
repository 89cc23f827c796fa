"""Where a reload may look: under the models root only. `/admin/reload` takes a model name, a
`name/version` or a bare version (of the model served now), never a path on the host, and its
errors name what was asked for, not what exists elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

from contract.manifest import MANIFEST_FILE
from contract.verify import RepositoryError

_TARGET = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}(?:/[0-9]{1,9})?|[0-9]{1,9})$")
TARGET_FORMS = "a model name, name/version or version under the models root"


def models_root(configured: Path) -> Path:
    """The root a configured repository path belongs to (it may name the root, a model folder or a
    version folder)."""
    path = configured.resolve()
    if (path / MANIFEST_FILE).is_file():
        return path.parent.parent
    if path.is_dir() and any(p.name.isdigit() and (p / MANIFEST_FILE).is_file() for p in path.iterdir()):
        return path.parent
    return path


def reload_target(root: Path, value: str, current_model: str) -> Path:
    """The folder under ``root`` that ``value`` names; RepositoryError (without host paths) otherwise."""
    if not _TARGET.match(value) or ".." in value.split("/"):
        raise RepositoryError(f"got {value!r}")
    target = root / current_model / value if value.isdigit() else root / value
    if not target.resolve().is_relative_to(root) or not target.is_dir():
        raise RepositoryError(f"{value!r}: no such model or version under the models root")
    return target
