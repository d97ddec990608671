"""The node agent: NVML telemetry per pod, reported to the gateway (docs/agent.md)."""
