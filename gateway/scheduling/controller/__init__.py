"""The scheduler shim's controller: the Kubernetes side of the queue (docs/scheduler.md).

`gateway.kube.Cluster` wraps the kubernetes client (the only place that talks to the API server),
`lease.LeaderLease` keeps one active replica through a coordination.k8s.io Lease, and
`loop.Controller` runs the passes over one shared pod cache (`cache.PodCache`), each job a
reconciler of its own: `roots.RootListing` (GPU workloads that predate the gateway, recorded
unowned), `orphans.OrphanLookup` (reservations whose objects are gone),
`ledger.LedgerRebuild` (the ledger rebuilt from the pods), `queue_pass.QueuePass` (which
gangs start), `release.GangRelease` (their gates removed), `waiting.WaitingReport` (why the
others wait) and `webhook_drift.WebhookDriftWatch` (the webhook configurations' drift).
`run.build_controller` builds it from the settings. Like every adapter package of a subject, this
`__init__` imports nothing, so the subject's purity contract can check all its direct children.
"""
