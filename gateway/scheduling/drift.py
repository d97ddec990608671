"""Drift of the gateway's own webhook configurations: someone edited or deleted them. Pure.

Editing or deleting the ValidatingWebhookConfiguration is the quiet way around every rule
the gateway enforces, so the controller compares what the API server holds with the
baseline it recorded for this installation (docs/faults.md). The fingerprint covers every
field of every webhook except `clientConfig.caBundle`, which the chart or cert-manager
rotates. A new installation generation (the chart passes a digest of what it renders)
records a new baseline instead of raising an alarm.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.admission.pointer import is_object

#: Webhook configuration kinds, as `--watch-webhook KIND/NAME` names them.
KINDS = {"validating": "ValidatingWebhookConfiguration", "mutating": "MutatingWebhookConfiguration"}


def split_target(target: str) -> tuple[str, str]:
    """`validating/gpu-gateway` -> ("validating", "gpu-gateway"); ValueError naming the forms."""
    kind, _, name = target.partition("/")
    if kind not in KINDS or not name:
        raise ValueError(f"{target!r} is not validating/NAME or mutating/NAME")
    return kind, name


def _webhook(hook: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(hook)
    client = out.get("clientConfig")
    if is_object(client):
        out["clientConfig"] = {k: v for k, v in client.items() if k != "caBundle"}
    return out


def fingerprint(config: Mapping[str, Any] | None) -> str | None:
    """A digest of what a webhook configuration decides (None: it does not exist)."""
    if config is None:
        return None
    hooks = config.get("webhooks")
    hooks = [_webhook(h) for h in hooks if is_object(h)] if isinstance(hooks, list) else []
    hooks.sort(key=lambda h: str(h.get("name", "")))
    text = json.dumps(hooks, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Drift:
    target: str
    state: str
    """`deleted` or `changed` (an alarm), or `restored` (back to the baseline)."""
    expected: str | None
    seen: str | None

    @property
    def alarm(self) -> bool:
        return self.state != "restored"

    def describe(self) -> str:
        kind, name = split_target(self.target)
        what = f"{KINDS[kind]} {name}"
        if self.state == "deleted":
            return f"{what} was deleted: GPU requests are no longer sent to the gateway"
        if self.state == "changed":
            return (f"{what} was changed outside the installation (fingerprint {self.expected} -> {self.seen}): "
                    "what the gateway is sent may have narrowed")
        return f"{what} matches the installation again"


def compare(target: str, expected: str | None, seen: str | None, *, alarmed: bool) -> Drift | None:
    """The transition to report for one configuration, or None when nothing changed."""
    if seen != expected and not alarmed:
        return Drift(target, "deleted" if seen is None else "changed", expected, seen)
    if seen == expected and alarmed:
        return Drift(target, "restored", expected, seen)
    return None
