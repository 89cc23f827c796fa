"""Finding and verifying a repository version: manifest schema, checksums, cards.

Everything wrong raises RepositoryError naming the file and the problem; nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from contract.manifest import CARD_FILE, MANIFEST_FILE, Manifest, ModelCard
from contract.reference import REFERENCE_FILE, InputReference

T = TypeVar("T", bound=BaseModel)


class RepositoryError(Exception):
    """The repository (or one file in it) is missing, corrupt or does not match its manifest."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_version(path: Path) -> Path:
    """A version folder from a root, a model folder or a version folder: the newest version wins."""
    if (path / MANIFEST_FILE).is_file():
        return path
    if not path.is_dir():
        raise RepositoryError(f"{path}: no such repository directory")
    versions = sorted(
        (p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / MANIFEST_FILE).is_file()),
        key=lambda p: int(p.name),
    )
    if versions:
        return versions[-1]
    models = sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: max((q.stat().st_mtime for q in p.glob(f"*/{MANIFEST_FILE}")), default=0.0),
    )
    for model_dir in reversed(models):
        try:
            return resolve_version(model_dir)
        except RepositoryError:
            continue
    raise RepositoryError(f"{path}: no model version found (expected <name>/<version>/{MANIFEST_FILE})")


def _parse(schema: type[T], path: Path, what: str) -> T:
    """Read and validate one JSON file; RepositoryError names the file and the first bad field."""
    try:
        return schema.model_validate_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise RepositoryError(f"{path}: missing") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise RepositoryError(f"{path}: invalid {what} at {where}: {first['msg']}") from exc


def load_manifest(version_dir: Path) -> Manifest:
    """Parse and validate manifest.json."""
    return _parse(Manifest, version_dir / MANIFEST_FILE, "manifest")


def verify(version_dir: Path) -> Manifest:
    """Manifest schema plus the sha256 of every listed file, and every file the manifest points at."""
    return verify_with_cards(version_dir)[0]


def inside(version_dir: Path, rel: str, field: str) -> Path:
    """``version_dir / rel``, refused when it resolves outside the version folder (``..``, an absolute
    path, a symlink out): a manifest names files of its own version only. Checked before the file is
    touched, so the error says nothing about what exists elsewhere on the host."""
    root = version_dir.resolve()
    path = (version_dir / rel).resolve()
    if not path.is_relative_to(root) or path == root:
        raise RepositoryError(
            f"{version_dir / MANIFEST_FILE}: {field} {rel!r}: expected a file inside its version folder"
        )
    return path


def verify_with_cards(version_dir: Path) -> tuple[Manifest, dict[str, ModelCard]]:
    """What verify checks, returning the parsed cards by model name as well (read once)."""
    manifest = load_manifest(version_dir)
    referenced = {m.path: m.sha256 for m in manifest.members}
    referenced.update(
        {e.meta_model: e.meta_sha256 for e in manifest.ensembles if e.meta_model and e.meta_sha256}
    )
    for m in manifest.members:
        inside(version_dir, m.path, f"members[{m.name}].path")
        inside(version_dir, m.card, f"members[{m.name}].card")
    for e in manifest.ensembles:
        inside(version_dir, e.card, f"ensembles[{e.name}].card")
        if e.meta_model:
            inside(version_dir, e.meta_model, f"ensembles[{e.name}].meta_model")
    for rel, expected in {**manifest.files, **referenced}.items():
        path = inside(version_dir, rel, "files")
        if not path.is_file():
            raise RepositoryError(f"{path}: missing (listed in {MANIFEST_FILE})")
        actual = sha256_file(path)
        if actual != expected:
            raise RepositoryError(f"{path}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…)")
    specs = [(m.name, m.card) for m in manifest.members] + [(e.name, e.card) for e in manifest.ensembles]
    cards = {name: load_card(inside(version_dir, card, f"{name}.card")) for name, card in specs}
    return manifest, cards


def load_card(path: Path) -> ModelCard:
    """Parse one card.json."""
    if path.name != CARD_FILE:
        raise RepositoryError(f"{path}: expected a {CARD_FILE}")
    return _parse(ModelCard, path, "card")


def load_reference(version_dir: Path, manifest: Manifest) -> InputReference | None:
    """The version's input reference (checksummed with the other files), or None for a version built
    before references were written."""
    if REFERENCE_FILE not in manifest.files:
        return None
    path = version_dir / REFERENCE_FILE
    reference = _parse(InputReference, path, "input reference")
    expected = [(c.name, c.kind) for c in manifest.inputs]
    found = [(c.name, c.kind) for c in reference.columns]
    if found != expected:
        raise RepositoryError(f"{path}: columns {found} do not match the manifest's inputs {expected}")
    return reference
