"""GPU telemetry, pure: cgroup and pod-resources parsing (process -> pod), GPU samples and the
reports that carry them, the telemetry settings, attribution of GPU time, alert decisions,
workload names, and the usage report. The node agent (gateway.agent), the ingest API
(gateway.api.telemetry) and the store (gateway.store.telemetry) are its adapters.
"""
