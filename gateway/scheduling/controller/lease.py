"""One active controller at a time, through a coordination.k8s.io/v1 Lease.

As client-go's leader election: the holder renews `spec.renewTime` every pass; another
replica takes the lease over only once `renewTime + leaseDurationSeconds` has passed.
Every write carries the resourceVersion it read, so two replicas racing for an expired
lease cannot both win (the loser gets 409 Conflict).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from gateway.kube import Cluster, ClusterError

log = logging.getLogger("gateway.controller")


def micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(value: str) -> float:
    return datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


class LeaderLease:
    def __init__(self, cluster: Cluster, *, namespace: str, name: str, identity: str, duration_s: int = 15) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s

    def acquire(self, now: float) -> bool:
        """Take or renew the lease; True while this replica holds it."""
        try:
            lease = self.cluster.read_lease(self.namespace, self.name)
            if lease is None:
                self.cluster.create_lease(self.namespace, self._lease(now, transitions=0))
                log.info("took the controller lease %s/%s", self.namespace, self.name)
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            if holder != self.identity and not self._expired(spec, now):
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
            body = self._lease(now, transitions=transitions,
                               acquired=spec.get("acquireTime") if holder == self.identity else None)
            body["metadata"]["resourceVersion"] = (lease.get("metadata") or {}).get("resourceVersion")
            self.cluster.replace_lease(self.namespace, self.name, body)
            if holder != self.identity:
                log.info("took over the controller lease from %s", holder or "nobody")
            return True
        except ClusterError as exc:
            if exc.status not in (409, 422):
                log.warning("controller lease: %s", exc)
            return False

    def _expired(self, spec: dict[str, Any], now: float) -> bool:
        renewed = spec.get("renewTime") or spec.get("acquireTime")
        if not renewed:
            return True
        try:
            return parse_micro_time(str(renewed)) + int(spec.get("leaseDurationSeconds") or self.duration_s) < now
        except ValueError:
            return True

    def _lease(self, now: float, *, transitions: int, acquired: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration_s,
                     "acquireTime": acquired or micro_time(now), "renewTime": micro_time(now),
                     "leaseTransitions": transitions},
        }
