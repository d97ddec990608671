"""Owner and team as labels, so that `kubectl get -l gpu-gateway.io/team=vision -L gpu-gateway.io/owner`
selects and shows them. Pure.

The mutating webhook stamps `gpu-gateway.io/owner` and `gpu-gateway.io/team` as labels beside the
annotations of the same names (admission/mutation.py), and the validating webhook refuses a request
that sets or changes them to anything else (`label_problems`). Labels are for people and tools;
no decision ever reads them: the ledger and the annotations stay the source of ownership.

A label value is at most 63 characters of `[-A-Za-z0-9_.]` that begin and end with a letter or
digit, so a username such as `system:serviceaccount:ml:trainer` or `alice@example.com` cannot be
one. `label_value` keeps a valid value as it is and writes any other in a label-safe form: every
character outside `[-A-Za-z0-9_.]` becomes `_`, the result is cut to 52 characters and stripped
of leading and trailing `-`, `_` and `.`, and `-` and the first 10 hex digits of the SHA-256 of
the exact name are appended (`alice_example.com-ff8d9819fc`). The form is deterministic and
readable; the digest keeps names apart that read alike once cleaned (`a@b`, `a:b`) or cut. The
annotation always holds the exact name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.admission.decision import Violation
from gateway.admission.plan import Plan
from gateway.admission.pointer import labels_at
from gateway.admission.policy import OWNER_ANNOTATION, TEAM_ANNOTATION, Policy
from gateway.admission.verdict import violation

OWNER_LABEL = OWNER_ANNOTATION
TEAM_LABEL = TEAM_ANNOTATION

#: A Kubernetes label value (apimachinery `IsValidLabelValue`): empty, or 1 to 63 characters.
_VALID = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_UNSAFE = re.compile(r"[^-A-Za-z0-9_.]")
_DIGEST_CHARS = 10
_KEEP = 63 - 1 - _DIGEST_CHARS


def label_value(name: str) -> str:
    """`name` as a label value: itself when valid, else its label-safe form (module docstring)."""
    if _VALID.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    readable = _UNSAFE.sub("_", name)[:_KEEP].strip("-_.")
    return f"{readable}-{digest}" if readable else digest


def owner_labels(stamps: Mapping[str, str]) -> dict[str, str]:
    """The labels that go with the owner and team annotations in `stamps` (others have none)."""
    return {key: label_value(stamps[key]) for key in (OWNER_LABEL, TEAM_LABEL) if stamps.get(key)}


def label_problems(nodes: Iterable[tuple[str, Any]], old: Any, owner: str, team: str) -> list[tuple[str, str]]:
    """(rule, what is wrong) for each owner or team label that an object sets, changes or removes,
    at any of `nodes` ((pointer, node): the object at "" and its pod templates), to anything but
    the label-safe form of the owner and team the gateway records; `old` is None on a CREATE. A
    label an UPDATE leaves as it was is no change, so objects from before labels were stamped
    stay as they are."""
    found = []
    expected: dict[str, str | None] = {}
    for pointer, node in nodes:
        new, before = labels_at(node), labels_at(old, pointer) if old is not None else {}
        if OWNER_LABEL not in new and TEAM_LABEL not in new and OWNER_LABEL not in before \
                and TEAM_LABEL not in before:
            continue  # it neither sets nor had them (the usual object)
        if not expected:
            expected = {OWNER_LABEL: label_value(owner) if owner else None,
                        TEAM_LABEL: label_value(team) if team else None}
        where = pointer.lstrip("/").replace("/", ".") or "metadata"
        for key, rule in ((OWNER_LABEL, "owner-annotation"), (TEAM_LABEL, "team-annotation")):
            value = new.get(key)
            if value == expected[key] or value == before.get(key):
                continue
            did = "removes it" if value is None else f"sets {value!r}"
            must = f"must be {expected[key]!r}" if expected[key] is not None else "may not be set"
            found.append((rule, f"the label {key} on {where} {must}: the gateway sets it; this request {did}"))
    return found


def label_checks(plan: Plan, policy: Policy, owner: str, team: str, pointers: Iterable[str],
                 violations: list[Violation]) -> None:
    """A person may not set or change the owner and team labels to anything but what the gateway
    records (rules `owner-annotation`, `team-annotation`, as for the annotations); one violation
    is enough to say so."""
    nodes = [(pointer, plan.node(pointer)) for pointer in dict.fromkeys(pointers)]
    problems = label_problems(nodes, plan.request.old_obj, owner, team)
    if problems:
        violations.append(violation(policy, *problems[0]))
