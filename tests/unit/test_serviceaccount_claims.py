"""The principal of a projected service-account token: username from `sub`, groups derived."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.serviceaccount import ServiceAccountClaims, TelemetryAuthenticator
from gateway.errors import InvalidToken

# DNS-1123 labels, as Kubernetes names namespaces and service accounts.
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True)


@given(namespace=label, name=label)
def test_a_service_account_gets_the_groups_kubernetes_gives_it(namespace: str, name: str) -> None:
    sub = f"system:serviceaccount:{namespace}:{name}"
    claims = {"sub": sub, "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name}}}
    principal = ServiceAccountClaims().principal(claims)
    assert principal.username == sub
    assert principal.groups == ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                "system:authenticated")


@given(sub=st.one_of(st.none(), st.integers(), st.text(max_size=60)))
def test_anything_but_a_service_account_subject_is_refused(sub: object) -> None:
    parts = sub.split(":") if isinstance(sub, str) else []
    is_account = len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] and all(parts[2:])
    if is_account:
        assert ServiceAccountClaims().principal({"sub": sub}).username == sub
    else:
        with pytest.raises(InvalidToken, match="not a service account"):
            ServiceAccountClaims().principal({"sub": sub})


@pytest.mark.parametrize("private", [
    {"namespace": "other", "serviceaccount": {"name": "agent"}},
    {"namespace": "gpu-gateway", "serviceaccount": {"name": "other"}},
    {"serviceaccount": {"name": "agent"}},
])
def test_the_kubernetes_claim_must_name_the_same_account(private: dict[str, object]) -> None:
    with pytest.raises(InvalidToken, match="another service account"):
        ServiceAccountClaims().principal({"sub": "system:serviceaccount:gpu-gateway:agent", "kubernetes.io": private})


def test_a_header_that_is_not_a_bearer_token_is_refused_before_routing() -> None:
    class Never:
        issuer = "https://kubernetes.default.svc.cluster.local"

        def validate(self, token: str) -> None:
            raise AssertionError("not reached")

    router = TelemetryAuthenticator(Never(), None)  # type: ignore[arg-type]
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(InvalidToken):
            router.authenticate(header)
