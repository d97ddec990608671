"""Signed checkpoints of the audit chain: keys, heartbeats, signing, sinks and verification.

Every `interval_s` (and at start and shutdown) a `Checkpointer` appends a heartbeat record
to the audit chain, so that a quiet period shows in the log, and signs the head it just
wrote with an Ed25519 key kept outside the database. Each signed checkpoint goes to an
append-only local file (`<dir>/checkpoints.jsonl`) and, when configured, is POSTed as JSON
to an external endpoint. `verify_checkpoints` reads them back and compares them with the log
(gateway.audit.checkpoints.compare). docs/audit.md describes the design.

A line of the file: `{"checkpoint": {...signed fields...}, "key_id": "...", "signature": "<base64>"}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.checkpoints import (
    Checkpoint,
    LogHead,
    Rejected,
    Signed,
    Verdict,
    checkpoint_from,
    compare_with_chain,
)
from gateway.audit.ports import AuditQuery, AuditStore
from gateway.config import CheckpointSettings
from gateway.errors import ConfigError, GatewayError

log = logging.getLogger("gateway.checkpoints")

FILE_NAME = "checkpoints.jsonl"


# ------------------------------------------------------------------ keys


def generate_key(out: Path) -> Path:
    """Write a new Ed25519 private key to `out` (PEM, mode 0600) and its public key to `out.pub`."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    pub = public_path(out)
    pub.write_bytes(public)
    return pub


def public_path(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the checkpoint key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"the checkpoint key {path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key: names the key in each line."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# ------------------------------------------------------------------ signing and reading


def sign(key: Ed25519PrivateKey, checkpoint: Checkpoint) -> dict[str, Any]:
    """The line published for `checkpoint`."""
    signature = key.sign(checkpoint.payload())
    return {"checkpoint": checkpoint.as_dict(), "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(signature).decode()}


def read_entry(entry: Any, key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint of a published line whose signature verifies; ValueError says why not."""
    if not isinstance(entry, dict) or not isinstance(entry.get("signature"), str):
        raise ValueError("not a signed checkpoint")
    checkpoint = checkpoint_from(entry.get("checkpoint"))
    try:
        signature = base64.b64decode(entry["signature"], validate=True)
        key.verify(signature, checkpoint.payload())
    except (InvalidSignature, binascii.Error, ValueError):
        raise ValueError("the signature does not verify with this public key (the line was edited, "
                         "or signed with another key)") from None
    return checkpoint


def read_checkpoints(source: Path, key: Ed25519PublicKey) -> tuple[list[Signed], list[Rejected]]:
    """Every line of `source` (a file, or the *.jsonl files of a directory), checked."""
    files = sorted(source.glob("*.jsonl")) if source.is_dir() else [source]
    if not files or not all(f.is_file() for f in files):
        raise ConfigError(f"no checkpoint files in {source}")
    signed: list[Signed] = []
    rejected: list[Rejected] = []
    order = 0
    for file in files:
        for number, line in enumerate(file.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            order += 1
            where = f"{file}:{number}"
            try:
                signed.append(Signed(read_entry(json.loads(line), key), where, order))
            except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                rejected.append(Rejected(where, order, f"not a valid signed checkpoint: {exc}"))
    return signed, rejected


def verify_checkpoints(store: AuditStore, source: Path, key: Ed25519PublicKey) -> Verdict:
    """Walk the store's hash chain and compare the log with the checkpoints in `source`.

    The checkpoints are read before the log, so that records other replicas append meanwhile
    can only make the log longer than what the checkpoints vouch for, never shorter.
    """
    signed, rejected = read_checkpoints(source, key)
    chain = store.verify()
    heads = [LogHead(int(r["seq"]), str(r["hash"]), float(r["ts"])) for r in store.audit_rows(AuditQuery())]
    broken = None if chain.ok else (chain.first_bad or 1, chain.problem)
    return compare_with_chain(heads, signed, rejected, broken)


# ------------------------------------------------------------------ heartbeats


def heartbeat_fields(replica: str, reason: str, interval_s: float) -> dict[str, Any]:
    """The audit record of a heartbeat: the gateway itself, saying it is alive and signing."""
    return {
        "request_uid": f"checkpoint-{replica}", "user": "gpu-gateway", "groups": "[]", "role": "system",
        "action": "heartbeat", "kind": "AuditCheckpoint", "namespace": "", "name": replica,
        "object_uid": "", "gpus": 0, "decision": "allowed", "mode": "enforce", "rule": "checkpoint",
        "reason": f"{reason} heartbeat of replica {replica} (checkpoint every {interval_s:g} s)",
        "policy_version": "", "owner": "", "team": "",
    }


def write_heartbeat(store: AuditStore, replica: str, reason: str, interval_s: float,
                    now: float) -> tuple[int, str]:
    """Append a heartbeat record; the head (count, hash) right after it, in the same transaction."""
    return store.record_event(heartbeat_fields(replica, reason, interval_s), now=now)


# ------------------------------------------------------------------ sinks


class Sink(Protocol):
    name: str

    def publish(self, entry: dict[str, Any]) -> None: ...


class FileSink:
    """Appends one line per checkpoint to `<directory>/checkpoints.jsonl`, synced to disk."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE_NAME
        self.name = str(self.path)

    def publish(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write with O_APPEND: replicas sharing the file never interleave
            os.fsync(fd)
        finally:
            os.close(fd)


class HttpSink:
    """POSTs each checkpoint as JSON to an external endpoint (any 2xx is accepted)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.name = url
        self._client = httpx.Client(timeout=timeout_s)

    def publish(self, entry: dict[str, Any]) -> None:
        response = self._client.post(self.url, json=entry)
        response.raise_for_status()

    def close(self) -> None:
        self._client.close()


# ------------------------------------------------------------------ the checkpointer


@dataclass(frozen=True)
class Published:
    checkpoint: Checkpoint
    failed: tuple[str, ...]
    """Sinks that could not take it (logged)."""


def default_replica() -> str:
    """The replica's name in checkpoints: the host name (the pod's name in Kubernetes)."""
    return socket.gethostname() or "gpu-gateway"


class Checkpointer:
    """Signs the chain head every `interval_s` on a thread, and once more on `stop`."""

    def __init__(self, store: AuditStore, key: Ed25519PrivateKey, sinks: Sequence[Sink], *,
                 replica: str, interval_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        if interval_s <= 0:
            raise ConfigError("the checkpoint interval must be positive")
        self.store, self.key, self.sinks = store, key, list(sinks)
        self.replica, self.interval_s, self.clock = replica, interval_s, clock
        self.failures = 0
        """Checkpoints not written or not published to every sink."""
        self.started_at = clock()
        self.last_published: float | None = None
        """When the last checkpoint was signed and published to every sink."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def checkpoint(self, reason: str = "periodic") -> Published:
        """Heartbeat, sign the head after it, publish it. A failing sink is logged, never raised."""
        with self._lock:
            now = self.clock()
            seq, head = write_heartbeat(self.store, self.replica, reason, self.interval_s, now)
            checkpoint = Checkpoint(self.replica, seq, head, now, self.interval_s, reason)
            entry = sign(self.key, checkpoint)
            failed = []
            for sink in self.sinks:
                try:
                    sink.publish(entry)
                except (OSError, httpx.HTTPError) as exc:
                    failed.append(sink.name)
                    log.error("checkpoint %d of replica %s not published to %s: %s", seq, self.replica,
                              sink.name, exc)
            if failed:
                self.failures += 1
            else:
                self.last_published = now
            log.info("signed checkpoint: record %d (%s...) by replica %s", seq, head[:16], self.replica)
            return Published(checkpoint, tuple(failed))

    def age_s(self) -> float:
        """Seconds since the last checkpoint every sink took (since this checkpointer was made,
        when none yet): what an alert on a stalled audit trail watches."""
        since = self.started_at if self.last_published is None else self.last_published
        return max(self.clock() - since, 0.0)

    def _safe_checkpoint(self, reason: str) -> None:
        try:
            self.checkpoint(reason)
        except GatewayError as exc:  # the store is down: the next heartbeat will show the gap
            self.failures += 1
            log.error("checkpoint of replica %s failed: %s", self.replica, exc)

    def start(self) -> None:
        """Sign once now, then every `interval_s` on a daemon thread."""
        if self._thread is not None:
            return
        self._safe_checkpoint("start")

        def run() -> None:
            while not self._stop.wait(self.interval_s):
                self._safe_checkpoint("periodic")

        self._thread = threading.Thread(target=run, name="gpu-gateway-audit-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and sign the final checkpoint (after the server drained its requests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.interval_s, 30))
            self._thread = None
        self._safe_checkpoint("shutdown")
        for sink in self.sinks:
            if isinstance(sink, HttpSink):
                sink.close()


def build_checkpointer(settings: CheckpointSettings | None, store: AuditStore) -> Checkpointer | None:
    """The checkpointer `serve` runs, from its settings (None: checkpoints are off).

    `store` is either backend (both write through `_write`); a bad key fails here, before serving.
    """
    if settings is None:
        return None
    key = load_private_key(settings.key_file)
    sinks: list[Sink] = [FileSink(settings.directory)]
    if settings.url is not None:
        sinks.append(HttpSink(settings.url))
    return Checkpointer(store, key, sinks, replica=settings.replica or default_replica(),
                        interval_s=settings.interval_s)
