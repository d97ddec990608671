"""Scheduling: which waiting gangs the queue releases, the ledger rebuilt from the cluster, what
people hold and wait for, and drift of the gateway's webhook configurations.

Its direct children are pure (no I/O; import-linter checks each one); `ports` declares what it
needs from a store. Its adapters: the controller (`controller/`, the Kubernetes side: one
reconciler per job over a shared pod cache) and the store's queue (gateway.store.queue).
"""
