"""Run-time settings layered over the bundle (gateway.admission.overrides)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.admission.overrides import (
    Overrides,
    SettingError,
    apply,
    check_binding,
    check_quota,
    quota_view,
)
from gateway.admission.policy import Policy


def test_empty_overrides_leave_the_policy_as_it_is(policy: Policy) -> None:
    assert apply(policy, Overrides()) is policy


def test_binding_replaces_the_bundles_roles_and_an_empty_one_removes_them(policy: Policy) -> None:
    applied = apply(policy, Overrides(bindings={"group:newcomers": ("intern",), "group:gpu-interns": ()}))
    assert applied.identity("zoe", ("newcomers",)).role == "intern"
    assert applied.identity("ivan", ("gpu-interns",)).role is None
    assert policy.identity("ivan", ("gpu-interns",)).role == "intern"
    assert applied.version.startswith(policy.version + "+") and applied.version != policy.version


def test_quotas_override_user_team_and_role(policy: Policy) -> None:
    applied = apply(policy, Overrides(quotas={
        "user:ivan": {"max_concurrent_gpus": 4},
        "team:vision": {"max_concurrent_gpus": None},
        "role:intern": {"max_gpus_per_workload": 2},
    }))
    assert applied.user_cap("ivan", "intern") == 4
    assert applied.user_cap("jane", "intern") == 16  # the role's, unchanged
    assert applied.team_cap("vision") is None
    assert applied.role_limits("intern").max_gpus_per_workload == 2
    assert applied.role_limits("intern").max_concurrent_gpus == 16
    assert applied.role_limits("intern").priority_classes == policy.role_limits("intern").priority_classes
    assert quota_view(applied, "role:intern") == {"max_gpus_per_workload": 2, "max_concurrent_gpus": 16}
    assert quota_view(applied, "user:ivan") == {"max_concurrent_gpus": 4}
    assert quota_view(applied, "user:jane") == {}  # no quota of her own: her role's applies


@pytest.mark.parametrize(("target", "values", "message"), [
    ("planet:x", {"max_concurrent_gpus": 1}, "must be user:NAME"),
    ("team:", {"max_concurrent_gpus": 1}, "must be user:NAME"),
    ("role:emperor", {"max_concurrent_gpus": 1}, "unknown role"),
    ("team:vision", {"max_gpus_per_workload": 1}, "is not a team quota"),
    ("team:vision", {"max_concurrent_gpus": -1}, "non-negative"),
    ("team:vision", {"max_concurrent_gpus": True}, "non-negative"),
    ("team:vision", {}, "sets one or more"),
    ("user:ivan", ["max_concurrent_gpus"], "sets one or more"),
])
def test_bad_quotas_are_refused_with_a_clear_message(policy: Policy, target: str, values: object,
                                                     message: str) -> None:
    with pytest.raises(SettingError, match=message):
        check_quota(policy, target, values)


def test_bad_bindings_are_refused(policy: Policy) -> None:
    with pytest.raises(SettingError, match="group:NAME or user:NAME"):
        check_binding(policy, "interns", ["intern"])
    with pytest.raises(SettingError, match="unknown role"):
        check_binding(policy, "user:x", ["emperor"])
    with pytest.raises(SettingError, match="list of role names"):
        check_binding(policy, "user:x", "intern")
    assert check_binding(policy, "user:x", ["intern", "admin", "intern"]) == ("admin", "intern")


_NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=8)


@given(caps=st.dictionaries(_NAMES, st.one_of(st.none(), st.integers(0, 10**6)), max_size=8))
def test_user_caps_are_exactly_what_was_set(policy: Policy, caps: dict[str, int | None]) -> None:
    applied = apply(policy, Overrides(quotas={f"user:{u}": {"max_concurrent_gpus": c} for u, c in caps.items()}))
    for user, cap in caps.items():
        assert applied.user_cap(user, "intern") == cap
    assert applied.user_cap("nobody at all", "intern") == policy.user_cap("nobody at all", "intern")
