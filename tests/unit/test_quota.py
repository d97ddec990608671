"""check_caps: which caps `asked` more GPUs would break, given what the ledger holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission.quota import CapCheck, Usage, check_caps

PROPS = settings(max_examples=200, deadline=None, derandomize=True)

caps = st.none() | st.integers(min_value=0, max_value=10_000)
used = st.integers(min_value=0, max_value=10_000)
asked = st.integers(min_value=-1_000, max_value=10_000)


def scopes(broken: list[CapCheck]) -> list[str]:
    return [b.scope for b in broken]


# ------------------------------------------------------------------ cases


def test_unlimited_caps_never_break():
    assert check_caps(10**9, Usage(user=10**9, team=10**9), user_cap=None, team_cap=None) == []


def test_one_unlimited_cap_only_checks_the_other():
    usage = Usage(user=100, team=100)
    assert scopes(check_caps(1, usage, user_cap=None, team_cap=100)) == ["team"]
    assert scopes(check_caps(1, usage, user_cap=100, team_cap=None)) == ["user"]


def test_exact_fit_is_allowed():
    assert check_caps(6, Usage(user=10, team=34), user_cap=16, team_cap=40) == []
    assert check_caps(16, Usage(), user_cap=16, team_cap=16) == []


def test_one_over_is_denied_with_the_numbers_of_the_message():
    [b] = check_caps(7, Usage(user=10, team=0), user_cap=16, team_cap=40)
    assert b == CapCheck(scope="user", cap=16, used=10, asked=7)
    assert not b.fits and b.free == 6
    [b] = check_caps(7, Usage(user=0, team=34), user_cap=16, team_cap=40)
    assert (b.scope, b.cap, b.used, b.asked, b.free) == ("team", 40, 34, 7, 6)


def test_both_caps_broken_are_both_reported_user_first():
    broken = check_caps(8, Usage(user=10, team=40), user_cap=16, team_cap=40)
    assert broken == [CapCheck("user", 16, 10, 8), CapCheck("team", 40, 40, 8)]
    assert [b.free for b in broken] == [6, 0]


def test_shrinking_or_asking_nothing_is_always_allowed_even_over_a_lowered_cap():
    over = Usage(user=500, team=900)
    for n in (0, -1, -64):
        assert check_caps(n, over, user_cap=16, team_cap=40) == []
        assert check_caps(n, over, user_cap=0, team_cap=0) == []


def test_growing_while_already_over_a_lowered_cap_is_denied():
    broken = check_caps(1, Usage(user=20, team=50), user_cap=16, team_cap=40)
    assert scopes(broken) == ["user", "team"]
    assert all(b.free == 0 for b in broken)


def test_zero_cap_denies_any_gpu():
    assert scopes(check_caps(1, Usage(), user_cap=0, team_cap=None)) == ["user"]


# ------------------------------------------------------------------ properties


@PROPS
@given(asked=asked, user=used, team=used, user_cap=caps, team_cap=caps)
def test_a_cap_is_broken_exactly_when_used_plus_asked_exceeds_it(asked, user, team, user_cap, team_cap):
    broken = check_caps(asked, Usage(user=user, team=team), user_cap=user_cap, team_cap=team_cap)
    expected = [
        CapCheck(scope, cap, u, asked)
        for scope, cap, u in (("user", user_cap, user), ("team", team_cap, team))
        if asked > 0 and cap is not None and u + asked > cap
    ]
    assert broken == expected
    for b in broken:
        assert not b.fits
        assert b.free == max(b.cap - b.used, 0)
        assert b.asked > b.free  # the message's "asks for N more" is more than what is free


@PROPS
@given(asked=st.integers(min_value=1, max_value=10_000), user=used, team=used,
       user_cap=caps, team_cap=caps)
def test_asking_more_never_breaks_fewer_caps(asked, user, team, user_cap, team_cap):
    usage = Usage(user=user, team=team)
    fewer = set(scopes(check_caps(asked, usage, user_cap=user_cap, team_cap=team_cap)))
    more = set(scopes(check_caps(asked + 1, usage, user_cap=user_cap, team_cap=team_cap)))
    assert fewer <= more


@PROPS
@given(asked=st.integers(min_value=1, max_value=10_000), user=used, team=used,
       user_cap=caps, team_cap=caps)
def test_raising_a_cap_or_freeing_gpus_never_breaks_more(asked, user, team, user_cap, team_cap):
    before = set(scopes(check_caps(asked, Usage(user, team), user_cap=user_cap, team_cap=team_cap)))
    raised = set(scopes(check_caps(
        asked, Usage(user, team),
        user_cap=None if user_cap is None else user_cap + 1,
        team_cap=None if team_cap is None else team_cap + 1,
    )))
    freed = set(scopes(check_caps(
        asked, Usage(max(user - 1, 0), max(team - 1, 0)), user_cap=user_cap, team_cap=team_cap)))
    assert raised <= before and freed <= before


@PROPS
@given(user=used, team=used, user_cap=caps, team_cap=caps)
def test_what_is_free_always_fits_and_one_more_does_not(user, team, user_cap, team_cap):
    usage = Usage(user=user, team=team)
    limits = [c for c in (user_cap, team_cap) if c is not None]
    if not limits:
        assert check_caps(10**9, usage, user_cap=None, team_cap=None) == []
        return
    room = min(max(cap - u, 0) for cap, u in ((user_cap, user), (team_cap, team)) if cap is not None)
    if room > 0:
        assert check_caps(room, usage, user_cap=user_cap, team_cap=team_cap) == []
    assert check_caps(room + 1, usage, user_cap=user_cap, team_cap=team_cap) != []
