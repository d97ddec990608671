"""The audit log: change history (what an UPDATE changed), the audit record of an admission, and
the comparison of the log with signed checkpoints.

Its direct children are pure (no I/O; import-linter checks each one); `ports` declares what it
needs from a store. The chain and its tables are in gateway.store (chain.py).
"""
