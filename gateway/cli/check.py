"""`gpu-gateway check`: run a manifest through the core as if a user submitted it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.policy_bundle import PolicyHolder, default_policy_dir
from gateway.whatif import parse_documents
from gateway.whatif import run_check as check_documents


def load_documents(file: Path) -> list[Mapping[str, Any]]:
    return parse_documents(file.read_text(), str(file))


def run_check(*, user: str, groups: tuple[str, ...], file: Path, action: str, owner: str | None,
              owner_team: str | None, namespace: str | None,
              policy_dir: Path | None) -> list[dict[str, Any]]:
    policy = PolicyHolder(policy_dir or default_policy_dir()).policy
    return check_documents(load_documents(file), policy=policy, user=user, groups=groups, action=action,
                           owner=owner, owner_team=owner_team, namespace=namespace)
