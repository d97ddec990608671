"""GPU telemetry, pure: cgroup and pod-resources parsing (process -> pod), samples, attribution
and alert decisions, and the usage report. The node agent (gateway.agent), the ingest API
(gateway.api.telemetry) and the store (gateway.store.telemetry) are its adapters.
"""
