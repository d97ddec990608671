"""GPU usage as a report: one row per user, team or role, for a table or CSV.

The input is the body of `GET /api/v1/usage` (`users` and `teams`: GPUs reserved now;
`gpu_hours`, with a period: GPU-hours held per `users`, `teams` and `roles`), so the API's CSV
and `gpuctl usage`'s table show the same rows. Roles have no "GPUs now" (the ledger counts
reservations per user and team); cells a scope lacks are empty in CSV.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BY = ("user", "team", "role")
CSV_COLUMNS = ("by", "name", "gpus_now", "gpu_hours", "since", "until")


@dataclass(frozen=True, slots=True)
class UsageRow:
    by: str
    """user, team or role"""
    name: str
    gpus_now: int | None
    """GPUs reserved now (None for roles)"""
    gpu_hours: float | None
    """GPU-hours held in the period (None without a period)"""


def usage_rows(body: Mapping[str, Any], by: str | None = None) -> list[UsageRow]:
    """The rows of one scope (`by`), or of users, then teams, then roles; names in order."""
    if by is not None and by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}, not {by!r}")
    hours: Mapping[str, Any] = body.get("gpu_hours") or {}
    rows = []
    for scope in (by,) if by else BY:
        now: Mapping[str, Any] = body.get(f"{scope}s", {}) if scope != "role" else {}
        held: Mapping[str, Any] = hours.get(f"{scope}s", {})
        for name in sorted(set(now) | set(held)):
            rows.append(UsageRow(scope, name, int(now.get(name, 0)) if scope != "role" else None,
                                 float(held.get(name, 0.0)) if hours else None))
    return rows


def usage_csv(body: Mapping[str, Any], by: str | None = None) -> str:
    """RFC 4180 CSV with a header line (`CSV_COLUMNS`); the period's bounds in ISO 8601 UTC on every row."""
    hours: Mapping[str, Any] = body.get("gpu_hours") or {}
    since, until = (_iso(hours["since"]), _iso(hours["until"])) if hours else ("", "")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in usage_rows(body, by):
        writer.writerow([r.by, r.name, "" if r.gpus_now is None else r.gpus_now,
                         "" if r.gpu_hours is None else f"{r.gpu_hours:.6f}", since, until])
    return out.getvalue()


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(float(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
