"""Quota arithmetic: does a reservation fit the caps that apply? Pure integers, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """GPUs currently reserved in the ledger, excluding the target's own reservation."""

    user: int = 0
    team: int = 0


@dataclass(frozen=True, slots=True)
class CapCheck:
    scope: str
    """`user` or `team`."""
    cap: int
    used: int
    asked: int

    @property
    def fits(self) -> bool:
        return self.used + self.asked <= self.cap

    @property
    def free(self) -> int:
        return max(self.cap - self.used, 0)


@dataclass(frozen=True, slots=True)
class CapFigure:
    """A cap a request is held to, with the figures it is compared with (the what-if reports them)."""

    rule: str
    """The rule that enforces it: `workload-gpu-limit`, `user-quota` or `team-quota`."""
    subject: str
    """Whose cap: `role intern`, `user alice (role intern)`, `team vision`."""
    limit: int | None
    """None: unlimited."""
    used: int | None
    """GPUs held now, less the target's own; None for a per-workload limit, or where usage was not read."""
    asked: int

    @property
    def fits(self) -> bool:
        """As the decision compares them (usage not read counts as none held)."""
        return self.limit is None or (self.used or 0) + self.asked <= self.limit


def check_caps(
    asked: int, usage: Usage, *, user_cap: int | None, team_cap: int | None
) -> list[CapCheck]:
    """The caps that `asked` more GPUs would break (empty when everything fits).

    `None` means unlimited. Asking for zero or fewer GPUs never breaks a cap: shrinking
    is always allowed, even when a cap was lowered below current use.
    """
    broken: list[CapCheck] = []
    if asked <= 0:
        return broken
    for scope, cap, used in (("user", user_cap, usage.user), ("team", team_cap, usage.team)):
        if cap is not None and used + asked > cap:  # CapCheck.fits, without building one that fits
            broken.append(CapCheck(scope, cap, used, asked))
    return broken
