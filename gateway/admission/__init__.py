"""Admission, pure: review parsing, workload kinds and their pod sets, actors, the compiled policy,
prepare and decide, verdicts, the ownership patch, data references, quotas, approvals and the
queue-mode gate. No I/O (import-linter forbids it); the webhook (gateway.webhook, gateway.service)
and the store (gateway.store) are its adapters.
"""
