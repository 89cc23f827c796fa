"""The live version beside an earlier one of the same repository: offline cards side by side and,
where the ledger still holds labelled rows of both, their online results (GET /compare?against=N)."""

from __future__ import annotations

from typing import Any

from contract.manifest import MANIFEST_FILE, Manifest, ModelCard
from contract.verify import RepositoryError, verify_with_cards
from service.errors import InvalidField, describe
from service.runtime.repository import LoadedRepository


def _versions(repo: LoadedRepository) -> list[int]:
    return sorted(
        int(p.name) for p in repo.path.parent.iterdir() if p.name.isdigit() and (p / MANIFEST_FILE).is_file()
    )


def earlier_version(repo: LoadedRepository, against: Any) -> tuple[Manifest, dict[str, ModelCard]]:
    """The manifest and cards of version ``against`` (verified), or a 400 naming the versions there are."""
    others = [v for v in _versions(repo) if v != repo.manifest.version]
    expected = f"another version of {repo.manifest.name} ({', '.join(map(str, others)) or 'there is none'})"
    try:
        number = int(against)
    except (TypeError, ValueError):
        raise InvalidField("against", expected, describe(against)) from None
    if number not in others:
        raise InvalidField("against", expected, str(against))
    try:
        return verify_with_cards(repo.path.parent / str(number))
    except RepositoryError as exc:
        raise InvalidField(
            "against", "a valid version", str(exc).replace(f"{repo.path.parent}/", "")
        ) from exc


def side_by_side(live: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """Per model name in either version: offline and online of both (None where a version lacks it)."""
    now = {m["model"]: m for m in live["models"]}
    then = {m["model"]: m for m in earlier["models"]}
    rows = []
    for name in sorted(set(now) | set(then)):
        a, b = now.get(name, {}), then.get(name, {})
        rows.append(
            {
                "model": name,
                "offline": a.get("offline"),
                "earlier_offline": b.get("offline"),
                "online": a.get("online"),
                "low": a.get("low"),
                "high": a.get("high"),
                "n": a.get("n", 0),
                "earlier_online": b.get("online"),
                "earlier_low": b.get("low"),
                "earlier_high": b.get("high"),
                "earlier_n": b.get("n", 0),
            }
        )
    return {
        "version": earlier["version"],
        "champion": earlier["champion"],
        "labelled_rows": earlier["labelled_rows"],
        "served_rows": earlier["served_rows"],
        "summary": earlier["summary"],
        "models": rows,
    }
