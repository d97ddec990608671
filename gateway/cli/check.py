"""`gpu-gateway check`: run a manifest through the core as if a user submitted it."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.policy_bundle import PolicyHolder, default_policy_dir
from gateway.runtime import RuntimeSettings
from gateway.store.base import Store
from gateway.whatif import StoreView, parse_documents
from gateway.whatif import run_check as check_documents

log = logging.getLogger("gateway.check")

#: What a check without a store says about usage.
NO_STORE = "no --state or --database-url given"


def load_documents(file: Path) -> list[Mapping[str, Any]]:
    return parse_documents(file.read_text(), str(file))


def run_check(*, user: str, groups: tuple[str, ...], file: Path, action: str, owner: str | None,
              owner_team: str | None, namespace: str | None, policy_dir: Path | None,
              store: Store | None = None) -> list[dict[str, Any]]:
    """The results of `file`; with `store` (opened read-only), against what it holds now, under
    the policy the gateway would apply: the bundle with the store's run-time settings over it."""
    holder = PolicyHolder(policy_dir or default_policy_dir())
    view = StoreView(store, NO_STORE)
    if store is not None:
        runtime = RuntimeSettings(holder, store, on_error=lambda error: log.warning("%s", error))
        runtime.refresh(time.time(), force=True)
        if runtime.unreadable:
            view = StoreView(None, f"the store cannot be read ({runtime.unreadable})")
    return check_documents(load_documents(file), policy=holder.policy, user=user, groups=groups, action=action,
                           owner=owner, owner_team=owner_team, namespace=namespace, store=view)
