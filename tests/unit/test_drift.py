"""Webhook configuration drift (gateway.scheduling.drift): the fingerprint and the transitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.scheduling.drift import compare, fingerprint, split_target

HOOK = {"name": "a", "failurePolicy": "Fail", "clientConfig": {"service": {"name": "g"}, "caBundle": "x"}}


def test_fingerprint_ignores_the_ca_bundle_and_the_order_of_webhooks() -> None:
    other = {"name": "b", "failurePolicy": "Ignore"}
    base = fingerprint({"webhooks": [HOOK, other]})
    assert base == fingerprint({"webhooks": [other, {**HOOK, "clientConfig": {"service": {"name": "g"}}}]})
    assert base != fingerprint({"webhooks": [{**HOOK, "failurePolicy": "Ignore"}, other]})
    assert fingerprint(None) is None
    assert fingerprint({"webhooks": None}) == fingerprint({})


@given(expected=st.sampled_from(["f1", "f2"]), seen=st.sampled_from(["f1", "f2", None]), alarmed=st.booleans())
def test_compare_reports_each_transition_once(expected: str, seen: str | None, alarmed: bool) -> None:
    drift = compare("validating/g", expected, seen, alarmed=alarmed)
    if seen == expected:
        assert (drift is None) == (not alarmed)
        assert drift is None or drift.state == "restored"
    else:
        assert (drift is None) == alarmed
        assert drift is None or drift.state == ("deleted" if seen is None else "changed")


@pytest.mark.parametrize("target", ["validating", "validating/", "webhook/x", "/x"])
def test_targets_must_name_a_kind_and_a_name(target: str) -> None:
    with pytest.raises(ValueError, match="validating/NAME or mutating/NAME"):
        split_target(target)
