"""Who answers a request: champion, sticky A/B challengers, and hash-sampled shadow variants.

Assignment is a pure function of a key's hash, so the same routing key always gets the same variant
(while the weights stay the same), and the same request id is always in or out of the shadow sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from contract.manifest import Routing
from service.errors import InvalidField, UnknownVariant


def unit_hash(key: str, salt: str) -> float:
    """A uniform number in [0, 1) from a key (stable across processes and restarts)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=salt.encode()[:16]).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Router:
    """An immutable routing table; the gateway swaps whole routers atomically."""

    champion: str
    challengers: tuple[tuple[str, float], ...]
    shadow: tuple[str, ...]
    shadow_fraction: float

    @classmethod
    def from_routing(
        cls, routing: Routing, known: Iterable[str], shadow_fraction: float | None = None
    ) -> Router:
        """Validate names against the loaded variants."""
        names = set(known)
        for field, name in (
            [("champion", routing.champion)]
            + [(f"challengers.{n}", n) for n in routing.challengers]
            + [(f"shadow[{i}]", n) for i, n in enumerate(routing.shadow)]
        ):
            if name not in names:
                raise UnknownVariant(name, names, field=field)
        fraction = routing.shadow_fraction if shadow_fraction is None else shadow_fraction
        return cls(
            champion=routing.champion,
            challengers=tuple(routing.challengers.items()),
            shadow=tuple(n for n in routing.shadow if n != routing.champion),
            shadow_fraction=fraction,
        )

    def assign(self, key: str) -> tuple[str, str]:
        """(variant, role): the challenger whose weight interval holds the key's hash, else the champion."""
        if not self.challengers:  # no hash needed (it is a measurable part of a single-row request)
            return self.champion, "champion"
        u = unit_hash(key, "ab")
        edge = 0.0
        for name, weight in self.challengers:
            edge += weight
            if u < edge:
                return name, "challenger"
        return self.champion, "champion"

    def shadow_for(self, request_id: str, served: str) -> list[str]:
        """Shadow variants to evaluate for this request (all or none, by the request id's hash)."""
        if not self.shadow or self.shadow_fraction <= 0.0:
            return []
        if self.shadow_fraction < 1.0 and unit_hash(request_id, "shadow") >= self.shadow_fraction:
            return []
        return [n for n in self.shadow if n != served]

    def as_routing(self) -> Routing:
        """Back to the manifest's schema (for GET /models and the admin API)."""
        return Routing(
            champion=self.champion,
            challengers=dict(self.challengers),
            shadow=list(self.shadow),
            shadow_fraction=self.shadow_fraction,
        )


def parse_routing(body: object) -> Routing:
    """An admin routing body, with errors naming the field."""
    from pydantic import ValidationError

    try:
        return Routing.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidField(where, first["msg"].removeprefix("Value error, "), "invalid value") from exc
