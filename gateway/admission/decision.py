"""Decisions as values that carry their reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Mode(StrEnum):
    """How a rule acts when it is violated."""

    ENFORCE = "enforce"
    """Deny the request."""
    WARN = "warn"
    """Allow, with an AdmissionReview warning the user sees in kubectl; audited."""
    DRY_RUN = "dry-run"
    """Allow silently; the audit log records what would have been denied."""


class Action(StrEnum):
    LAUNCH = "launch"
    MODIFY = "modify"
    KILL = "kill"
    EXEC = "exec"


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    mode: Mode
    message: str
    hint: str = ""
    """What the person can do about it, when the rule's general hint does not fit."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """What the ledger must hold for the target once the request is admitted."""

    owner: str
    team: str
    role: str
    gpus: int
    charged: bool
    """False for pods whose GPUs were already reserved with their workload."""
    shape: str = "{}"
    """JSON of the workload's shape (admission/shape.py), kept to decide scales and children later."""
    uid: str = ""
    """The object's UID, by which controllers' children find this record."""
    root_uid: str = ""
    """The UID of the record holding the charge: `uid` for a root (see plan.Target)."""
    refs: tuple[tuple[str, str], ...] | None = None
    """(resource key, name) of the data objects the workload's pods reference, kept while the
    reservation is, so that nobody else may create an object of that name (name squatting);
    None keeps what the ledger holds (a scale, a data object, a controller's child)."""


@dataclass(frozen=True, slots=True)
class Enqueue:
    """A launch admitted in queue mode: its pods wait behind the scheduling gate until the
    controller releases the whole gang (docs/scheduler.md). The queue row the store writes."""

    pods: int
    """GPU pods of the gang: all of them are released together."""
    priority: int
    priority_class: str
    reason: str


@dataclass(slots=True)
class Decision:
    """The answer to one request, with its reasons.

    Treat as immutable. Not `frozen`: one is built per request, and a frozen dataclass's
    `__init__` (an `object.__setattr__` per field) costs several times a plain one.
    """

    allowed: bool
    rule: str
    """The rule that decided: the violated rule on a deny, else the rule that allowed."""
    reason: str
    mode: Mode = Mode.ENFORCE
    action: Action | None = None
    """None when the request is not a governed action (passed untouched, not audited)."""
    gpus: int = 0
    audited: bool = False
    warnings: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = field(default_factory=tuple)
    reserve: Reservation | None = None
    """Set on an admitted launch or modify: the ledger row to write (replacing any old one)."""
    release: bool = False
    """True on an admitted kill of a recorded target: the ledger row to drop."""
    hold_s: int = 0
    """With `release`: the object is gone at once, but its containers may run this many seconds
    more (a pod deleted with grace 0 gets its own grace period from the kubelet), so the row,
    and its charge, stay until then."""
    owner: str = ""
    team: str = ""
    use_approval: str = ""
    """Set when an approval turned a denial into this allow: the approval the store marks used."""
    enqueue: Enqueue | None = None
    """Set when the launch is admitted to wait in the queue (its reservation is not charged yet)."""

    @property
    def verdict(self) -> str:
        return "allowed" if self.allowed else "denied"
