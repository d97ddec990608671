"""The audit log's pure part: change history (what an UPDATE changed) and the comparison of the
log with signed checkpoints. The chain, its tables and the checkpoint writer are in gateway.store.
"""
