"""Who is asking: the identity the API server vouches for, resolved to one role and teams.

Only `request.userInfo` is used. Nothing the requester wrote in the object names them,
except the choice among their own teams (validated by policy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from gateway.admission.actors import Actors


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...]
    role: str | None
    """The most privileged role the user holds (by the bundle's role order), None if none."""
    teams: tuple[str, ...]
    """Teams from groups with the team prefix, sorted; the first is the default team."""
    is_actor: bool = False
    """A controller, operator or autoscaler listed in limits.yaml `actors` (admission/actors.py):
    what it creates belongs to the owner of its parent's ledger record."""
    grant: str = ""
    """The id of the break-glass grant `role` comes from, when it does."""

    @property
    def default_team(self) -> str:
        return self.teams[0] if self.teams else ""

    def describe(self) -> str:
        via = f" by break-glass grant {self.grant}" if self.grant else ""
        return f"user {self.user} (role {self.role or 'none'}{via})"


@dataclass(frozen=True, slots=True)
class Grant:
    """A live break-glass grant: `user` holds `role` until `expires_at` (docs/approvals.md)."""

    id: str
    user: str
    role: str
    expires_at: float


def with_grants(identity: Identity, grants: Iterable[Grant], role_order: tuple[str, ...]) -> Identity:
    """`identity` raised to the most privileged role a live grant gives them, if above their own."""
    rank = {role: i for i, role in enumerate(role_order)}
    current = rank.get(identity.role, len(rank)) if identity.role else len(rank)
    best: Grant | None = None
    for grant in grants:
        if grant.user == identity.user and rank.get(grant.role, len(rank)) < current:
            best, current = grant, rank[grant.role]
    return identity if best is None else replace(identity, role=best.role, grant=best.id)


def subjects(user: str, groups: Iterable[str]) -> list[str]:
    """The casbin subjects a Kubernetes identity stands for: `user:NAME` and `group:NAME`."""
    return [f"user:{user}", *(f"group:{g}" for g in groups)]


def resolve_identity(
    user: str,
    groups: Iterable[str],
    *,
    bindings: Mapping[str, frozenset[str]],
    role_order: tuple[str, ...],
    team_prefix: str,
    actors: Actors,
) -> Identity:
    groups = tuple(groups)
    held: set[str] = set()
    for subject in subjects(user, groups):
        held |= bindings.get(subject, frozenset())
    role = next((r for r in role_order if r in held), None)
    teams = tuple(sorted({g[len(team_prefix):] for g in groups if g.startswith(team_prefix)} - {""}))
    return Identity(
        user=user,
        groups=groups,
        role=role,
        teams=teams,
        is_actor=actors.find(user) is not None,
    )
