"""A broken policy bundle is loud: a log line (the holder's), a metric, and an audit record.

The last good policy stays in force (gateway.policy_bundle.PolicyHolder); this records the
refused change in the tamper-evident log, so that an investigator sees when someone tried
to put a broken policy in place, and what was wrong with it. The record is written from a
short-lived thread: a reload runs on the event loop or in a signal handler, neither of
which may wait on the database.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from gateway.audit.ports import AuditStore
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder

log = logging.getLogger("gateway.policy")

#: The audit action of a refused policy or configuration change.
ACTION = "policy-reload"


def reload_failure_record(error: str, directory: str, version_in_force: str) -> dict[str, Any]:
    """The audit fields of a policy bundle that failed to load (the last good one kept)."""
    return {
        "request_uid": f"policy-reload-{time.time_ns()}", "user": "gpu-gateway", "groups": "[]",
        "role": "system", "action": ACTION, "kind": "PolicyBundle", "namespace": "",
        "name": directory, "object_uid": "", "gpus": 0, "decision": "denied", "mode": "enforce",
        "rule": ACTION,
        "reason": f"policy reload failed on {socket.gethostname()}; version {version_in_force} stays in force: "
                  f"{error}",
        "policy_version": version_in_force, "owner": "", "team": "",
    }


def report_reload_failure(store: AuditStore, metrics: Metrics, policies: PolicyHolder,
                          error: str) -> threading.Thread:
    """Count the failure and append its audit record in the background; the thread is returned."""
    metrics.policy_reload_failures.inc()
    record = reload_failure_record(error, str(policies.directory), policies.policy.version)

    def write() -> None:
        try:
            store.record_event(record, now=time.time())
        except Exception as exc:  # the store may be down too: the log line and the metric remain
            log.error("cannot audit the failed policy reload: %s", exc)

    thread = threading.Thread(target=write, name="policy-reload-audit", daemon=True)
    thread.start()
    return thread
