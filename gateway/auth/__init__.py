"""Bearer-token (JWT) authentication for the admin API.

Two modes, never both: a shared HS256 secret for local use, or an OIDC issuer whose
RS256/ES256 keys are discovered and cached (docs/auth.md). Either yields a `Principal`
(username and groups) that is resolved to a role exactly like a Kubernetes identity. The node
agents' projected service-account tokens have an authenticator of their own, used by the
telemetry endpoint only (`serviceaccount.py`).
"""

from gateway.auth.build import build_authenticator
from gateway.auth.principal import ClaimMapping, Principal
from gateway.auth.validator import Authenticator

__all__ = ["Authenticator", "ClaimMapping", "Principal", "build_authenticator"]
