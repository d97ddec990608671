"""The scheduler shim's controller: the Kubernetes side of the queue (docs/scheduler.md).

`kube.Cluster` wraps the kubernetes client (the only place that talks to the API server),
`lease.LeaderLease` keeps one active replica through a coordination.k8s.io Lease, and
`loop.Controller` runs the passes over one shared pod cache (`cache.PodCache`), each job a
reconciler of its own: `orphans.OrphanLookup` (reservations whose objects are gone),
`ledger.LedgerRebuild` (the ledger rebuilt from the pods), `queue_pass.QueuePass` (which
gangs start), `release.GangRelease` (their gates removed), `waiting.WaitingReport` (why the
others wait) and `webhook_drift.WebhookDriftWatch` (the webhook configurations' drift).
"""

from gateway.controller.loop import Controller, ControllerSettings

__all__ = ["Controller", "ControllerSettings"]
