"""The installation's key for the digests of ConfigMap and Secret values in the audit log.

The audit log records that a Secret's key changed as HMAC digests of the old and new
values (see `gateway.audit.history`). The key is kept outside the database, in
`<state>.history-key` beside the state file (32 random bytes, mode 0600, created on first
use), so that a copy of the database alone cannot be used to guess a weak secret from its
digest. Back it up with the state file: a new key makes older digests incomparable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from pathlib import Path

from gateway.errors import StoreError

KEY_BYTES = 32

log = logging.getLogger("gateway.store")


def history_key_path(state: Path) -> Path:
    return state.with_name(state.name + ".history-key")


def load_history_key(state: Path) -> bytes:
    """The key beside the state file `state`, created on first use."""
    path = history_key_path(state)
    if not path.exists():
        _create(path)
    try:
        key = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise StoreError(f"cannot read the history key {path}: {exc}") from exc
    if len(key) != KEY_BYTES:
        raise StoreError(f"the history key {path} is damaged ({len(key)} bytes, expected {KEY_BYTES}); "
                         "restore it from a backup (a new key makes older digests incomparable)")
    if mode & 0o077:
        log.warning("the history key %s is readable by others (mode %o); chmod 600 it", path, mode & 0o777)
    return key


def _create(path: Path) -> None:
    """Write a new key atomically: a partly written key is never seen, and a key another
    process created first is kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise StoreError(f"cannot create the history key {path}: {exc}") from exc
