"""What the audit log needs from a store: its role, the query it answers and the verdict of its
walk. Pure: `gateway.store` implements the protocol (the chain itself: gateway.store.chain).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.admission.actors import kind_plural


@dataclass(frozen=True)
class AuditQuery:
    user: str | None = None
    action: str | None = None
    decision: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None
    kind: str | None = None
    """The kind or its resource, in any case: `PyTorchJob`, `pytorchjobs` (see `kind_names`)."""
    namespace: str | None = None
    name: str | None = None
    after: int | None = None
    """Only records after this sequence number (a cursor, for following the log)."""


def kind_names(kind: str) -> tuple[str, ...]:
    """The lower-case names one kind goes by, from either of them: `PyTorchJob` or `pytorchjobs`.

    Records name a workload by its kind (`PyTorchJob`), and a `/scale` request by its resource
    (`pytorchjobs.kubeflow.org`), so a query for either must match both. The resource is the
    kind's plural, as Kubernetes forms it; a group suffix in `kind` is ignored.
    """
    base = kind.split(".", 1)[0].lower()
    names = {base, kind_plural(base)}
    for suffix, replacement in (("ies", "y"), ("es", ""), ("s", "")):
        if base.endswith(suffix) and len(base) > len(suffix):
            names.add(base[: -len(suffix)] + replacement)
    return tuple(sorted(n for n in names if n))


def named_by(kind: str, resources: Iterable[str]) -> list[str]:
    """The ledger keys among `resources` (`pytorchjobs.kubeflow.org`, `pods`) that `kind` names as
    a person types it (see `kind_names`; `jobs.batch` also works), the exact key first, then by key."""
    wanted, names = kind.lower(), kind_names(kind)
    found = sorted({r for r in resources if r == wanted or r.split(".", 1)[0] in names})
    return sorted(found, key=lambda r: r != wanted)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    first_bad: int | None = None
    """Sequence number of the first row that fails (or the position where one is missing)."""
    problem: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.rows} records verified"
        return f"audit chain broken at record {self.first_bad}: {self.problem}"


class AuditStore(Protocol):
    """The audit chain: its records, and the walk that proves them unaltered."""

    def audit_rows(self, query: AuditQuery | None = None) -> Iterator[dict[str, Any]]: ...

    def verify(self) -> VerifyResult: ...

    def record_event(self, fields: dict[str, Any], *, now: float) -> tuple[int, str]:
        """Append one record of the gateway's own doing (all of `fields`' audit columns); the
        chain's head (count, last hash) right after it."""
        ...
