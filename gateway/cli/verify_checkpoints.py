"""`gpu-gateway audit verify --checkpoints DIR --public-key KEY.pub`: the log against its signed checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gateway.audit.ports import AuditStore
from gateway.audit.signing.checkpointer import load_public_key, verify_checkpoints
from gateway.cli.common import gateway_error
from gateway.errors import GatewayError


def verify_with_checkpoints(store: AuditStore, checkpoints: Path, public_key: Path, output: str) -> int:
    """Print the verdict; the exit status: 0 when the log matches its checkpoints, 1 otherwise."""
    try:
        key = load_public_key(public_key)
        verdict = verify_checkpoints(store, checkpoints, key)
    except GatewayError as exc:
        raise gateway_error(exc) from exc
    if output == "json":
        out = verdict.as_json()
        out["first_bad"] = verdict.first_untrusted  # the same name as plain `audit verify -o json`
        click.echo(json.dumps(out))
    elif verdict.ok:
        click.echo(f"audit chain intact: {verdict.records} records verified")
        click.echo(verdict.describe())
    else:
        click.echo(verdict.describe(), err=True)
    return 0 if verdict.ok else 1
