"""Exceptions of gpu-gateway, in one place.

    GatewayError
    ├── RequestError        the requester's fault: the object or review cannot be read.
    │   │                   Answered with a deny (or HTTP 4xx), never an allow.
    │   ├── ReviewError       not a readable AdmissionReview (v1 or v1beta1)
    │   └── WorkloadError     the object inside cannot be reduced to pod sets (bad quantity,
    │                         fractional GPUs, negative or absurd replicas)
    ├── ConfigError         the operator's policy bundle or settings are invalid (loud at start,
    │                       last good kept on reload)
    ├── StoreError          ours: the ledger or audit store failed (5xx / failure policy)
    │   └── QuotaConflict     retryable: a concurrent writer held the store
    └── AuthError           an admin API bearer token could not be accepted
        ├── InvalidToken      the caller's fault: missing, malformed, expired, wrong issuer,
        │                     audience, algorithm or signature (HTTP 401)
        └── AuthUnavailable   ours: the identity provider could not be reached (HTTP 503)
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error gpu-gateway raises on purpose."""


class RequestError(GatewayError):
    """The request cannot be read; the safe answer is a deny with this message."""


class ReviewError(RequestError):
    """The body is not a readable AdmissionReview (admission.k8s.io/v1 or v1beta1)."""


class WorkloadError(RequestError):
    """The object cannot be reduced to pod sets and GPU counts."""


class ConfigError(GatewayError):
    """The policy bundle or a setting is invalid."""


class StoreError(GatewayError):
    """The ledger or audit store failed."""


class QuotaConflict(StoreError):
    """Another writer held the store; the operation may be retried."""


class AuthError(GatewayError):
    """A bearer token could not be accepted; `reason` says why, in words a person can act on.

    Reasons never contain the token itself.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidToken(AuthError):
    """The token is missing, malformed or fails validation (HTTP 401)."""


class AuthUnavailable(AuthError):
    """The identity provider's keys could not be fetched, so no token can be checked (HTTP 503)."""
