"""GPU telemetry: cgroup and pod-resources parsing (process -> pod), GPU samples and the reports
that carry them, the telemetry settings, attribution of GPU time, alert decisions, workload
names, and the usage report.

Its direct children are pure (no I/O; import-linter checks each one); `ports` declares what it
needs from a store. Its adapters: the node agent (`agent/`), the eviction of rogue pods
(`eviction/`), and, in the shared layers, the ingest API (gateway.api.telemetry) and the store's
tables (gateway.store.telemetry).
"""
