"""The audit log's keys, kept outside the database, and what they sign: checkpoints of the chain
(checkpointer.py: Ed25519 keys, heartbeats, sinks, verification) and the digests of ConfigMap and
Secret values in change history (history_key.py: the HMAC key beside the state file).
"""
