"""The scheduler shim's controller: the Kubernetes side of the queue (docs/scheduler.md).

`kube.Cluster` wraps the kubernetes client (the only place that talks to the API server),
`lease.LeaderLease` keeps one active replica through a coordination.k8s.io Lease, and
`loop.Controller` runs the passes: rebuild the ledger from the pods, run the queue,
remove the gate from released gangs, annotate and report the waiting ones.
"""

from gateway.controller.loop import Controller, ControllerSettings

__all__ = ["Controller", "ControllerSettings"]
