"""Who a validated token names: the username and groups read from its claims."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import InvalidToken


@dataclass(frozen=True, slots=True)
class Principal:
    username: str
    groups: tuple[str, ...]


class PrincipalReader(Protocol):
    """Reads the principal out of a validated token's claims."""

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        """The username and groups, or InvalidToken when the claims do not name them."""


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    username_claims: tuple[str, ...] = ("preferred_username", "sub")
    """The first claim holding a non-empty string is the username."""
    groups_claim: str = "groups"
    """Must be present and a list of strings; `[]` means no groups."""

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        username = next((claims[c] for c in self.username_claims
                         if isinstance(claims.get(c), str) and claims[c]), None)
        if username is None:
            raise InvalidToken(f"the token names no user: none of the claims {', '.join(self.username_claims)} "
                               "holds a non-empty string")
        if self.groups_claim not in claims:
            raise InvalidToken(f"the token has no {self.groups_claim!r} claim; ask the identity provider's "
                               "administrator to include groups in tokens for this audience")
        groups = claims[self.groups_claim]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise InvalidToken(f"the token's {self.groups_claim!r} claim is not a list of strings")
        return Principal(username=username, groups=tuple(groups))
