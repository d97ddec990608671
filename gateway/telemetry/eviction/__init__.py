"""Eviction of pods that run rogue GPU processes, through the Kubernetes API (docs/agent.md)."""
