"""Exceptions of gpu-gateway, in one place.

    GatewayError
    ├── RequestError        the requester's fault: the object or review cannot be read.
    │   │                   Answered with a deny (or HTTP 4xx), never an allow.
    │   ├── ReviewError       not a readable AdmissionReview v1
    │   └── WorkloadError     the object inside cannot be reduced to pod sets (bad quantity,
    │                         fractional GPUs, negative or absurd replicas)
    ├── ConfigError         the operator's policy bundle or settings are invalid (loud at start,
    │                       last good kept on reload)
    └── StoreError          ours: the ledger or audit store failed (5xx / failure policy)
        └── QuotaConflict     retryable: a concurrent writer held the store
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error gpu-gateway raises on purpose."""


class RequestError(GatewayError):
    """The request cannot be read; the safe answer is a deny with this message."""


class ReviewError(RequestError):
    """The body is not a readable admission.k8s.io/v1 AdmissionReview."""


class WorkloadError(RequestError):
    """The object cannot be reduced to pod sets and GPU counts."""


class ConfigError(GatewayError):
    """The policy bundle or a setting is invalid."""


class StoreError(GatewayError):
    """The ledger or audit store failed."""


class QuotaConflict(StoreError):
    """Another writer held the store; the operation may be retried."""
