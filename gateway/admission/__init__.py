"""Admission, pure: review parsing, workload kinds and their pod sets, actors, the compiled policy,
prepare and decide, verdicts, the ownership patch, data references, quotas, approvals and the
queue-mode gate; `ports` declares what it needs from a store. No I/O (import-linter forbids it).
Its adapters (gateway.webhook, gateway.service, gateway.whatif, gateway.store) stay outside the
package: every other subject builds on admission, and they build on those subjects.
"""
