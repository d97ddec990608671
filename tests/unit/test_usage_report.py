"""The usage report's rows and CSV (gateway.telemetry.usage_report): every name and figure survives a
CSV round trip, whatever the names contain."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.telemetry.usage_report import CSV_COLUMNS, usage_csv, usage_rows

names = st.text(min_size=1, max_size=12)  # commas, quotes, newlines and all
gpus = st.dictionaries(names, st.integers(0, 10**6), max_size=5)
hours = st.dictionaries(names, st.floats(0, 10**9, allow_nan=False), max_size=5)


@given(users=gpus, teams=gpus, held=st.none() | st.fixed_dictionaries({"users": hours, "teams": hours, "roles": hours}))
def test_csv_round_trip(users: dict[str, int], teams: dict[str, int], held: dict[str, dict[str, float]] | None) -> None:
    body: dict[str, object] = {"users": users, "teams": teams}
    if held is not None:
        body["gpu_hours"] = {"since": 1_790_000_000.0, "until": 1_790_003_600.0, **held}
    parsed = list(csv.reader(io.StringIO(usage_csv(body), newline="")))
    assert tuple(parsed[0]) == CSV_COLUMNS
    expected = usage_rows(body)
    assert len(parsed) - 1 == len(expected)
    for line, row in zip(parsed[1:], expected, strict=True):
        assert (line[0], line[1]) == (row.by, row.name)
        assert line[2] == ("" if row.gpus_now is None else str(row.gpus_now))
        assert line[3] == ("" if held is None else f"{row.gpu_hours:.6f}")
        assert (line[4], line[5]) == (("", "") if held is None else ("2026-09-21T14:13:20Z", "2026-09-21T15:13:20Z"))
    scopes = {"user": set(users) | set((held or {}).get("users", {})),
              "team": set(teams) | set((held or {}).get("teams", {})), "role": set((held or {}).get("roles", {}))}
    for by, wanted in scopes.items():
        assert [r.name for r in usage_rows(body, by)] == sorted(wanted)


def test_roles_have_no_gpus_now_and_missing_hours_are_zero() -> None:
    body = {"users": {"bob": 8}, "teams": {}, "gpu_hours": {"since": 0, "until": 3600, "users": {"eve": 1.5},
                                                           "teams": {}, "roles": {"intern": 1.5}}}
    assert [(r.by, r.name, r.gpus_now, r.gpu_hours) for r in usage_rows(body)] == [
        ("user", "bob", 8, 0.0), ("user", "eve", 0, 1.5), ("role", "intern", None, 1.5)]


def test_an_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="by must be one of user, team, role"):
        usage_rows({}, "group")
