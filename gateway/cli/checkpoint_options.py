"""The `serve` flags of signed audit checkpoints, collected into one CheckpointSettings argument."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.config import CheckpointSettings
from gateway.errors import ConfigError

_OPTIONS = [
    click.option("--checkpoint-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                 help="Ed25519 key (from `gpu-gateway audit keygen`) that signs the audit chain's head; "
                      "keep it outside the database."),
    click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="Append signed checkpoints to DIR/checkpoints.jsonl."),
    click.option("--checkpoint-interval", type=float, default=60.0, show_default=True, metavar="SECONDS",
                 help="Write a heartbeat record and sign the head this often (and once more at shutdown)."),
    click.option("--checkpoint-url", metavar="URL",
                 help="Also POST each checkpoint as JSON to this endpoint (a store outside the cluster's reach)."),
    click.option("--checkpoint-replica", metavar="NAME",
                 help="This replica's name in its checkpoints (default: the host name)."),
]


def checkpoint_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the flags to a click command and pass it `checkpoints=CheckpointSettings(...)` or None."""

    @functools.wraps(command)
    def wrapper(*args: Any, checkpoint_key: Path | None, checkpoint_dir: Path | None, checkpoint_interval: float,
                checkpoint_url: str | None, checkpoint_replica: str | None, **kwargs: Any) -> Any:
        checkpoints = None
        if (checkpoint_key is None) != (checkpoint_dir is None):
            raise click.UsageError("--checkpoint-key and --checkpoint-dir go together")
        if checkpoint_key is None and (checkpoint_url or checkpoint_replica):
            raise click.UsageError("--checkpoint-url and --checkpoint-replica need --checkpoint-key")
        if checkpoint_key is not None and checkpoint_dir is not None:
            try:
                checkpoints = CheckpointSettings(key_file=checkpoint_key, directory=checkpoint_dir,
                                                 interval_s=checkpoint_interval, url=checkpoint_url,
                                                 replica=checkpoint_replica)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from exc
        return command(*args, checkpoints=checkpoints, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated
