"""Scheduling, pure: which waiting gangs the queue releases, the ledger rebuilt from the cluster,
what people hold and wait for, and drift of the gateway's webhook configurations. The controller
(gateway.controller) and the store's queue (gateway.store.queue) are its adapters.
"""
