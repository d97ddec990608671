"""Times as people and scripts write them: epoch seconds, ISO 8601, or an age like `30d`."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_AGE_S = 10_000 * 365 * 86400


def parse_time(value: str, *, now: float | None = None) -> float:
    """Epoch seconds from `1764115200`, `2026-11-26T00:00:00Z` (naive means UTC) or `30d` ago.

    Raises ValueError with a message a person can act on (also for NaN, infinities and ages
    beyond any clock).
    """
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"{value!r} is not a time")
        return seconds
    age = _AGE.match(value.strip())
    if age:
        reference = now if now is not None else dt.datetime.now(dt.UTC).timestamp()
        ago = int(age.group(1)) * _UNIT[age.group(2)]
        if ago > _MAX_AGE_S:
            raise ValueError(f"{value!r} is further back than any record")
        return reference - ago
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither epoch seconds, an ISO 8601 time nor an age like 30d") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_duration(value: str) -> float:
    """Seconds from `3600`, `90m`, `2h`, `7d` or `1w`; raises ValueError."""
    try:
        seconds = float(value)
    except ValueError:
        age = _AGE.match(value.strip())
        if not age:
            raise ValueError(f"{value!r} is not a duration (seconds, or a number with s, m, h, d or w)") from None
        seconds = int(age.group(1)) * _UNIT[age.group(2)]
    if not 0 < seconds < math.inf:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


def rfc3339(ts: float) -> str | None:
    """`2026-12-02T10:00:00Z` for epoch seconds (UTC, whole seconds); None for a value no clock shows."""
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def with_time(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` with `time` (RFC 3339, UTC) beside its epoch `ts`, for people reading JSON and YAML.

    `time` is a rendering, not part of the record: the audit chain never hashes it.
    """
    ts = record.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return dict(record)
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key != "time":
            out[key] = value
        if key == "ts":
            out["time"] = rfc3339(ts)
    return out


def format_duration(seconds: float) -> str:
    """`seconds` as `parse_duration` reads it, in the largest unit that states it exactly (days
    from two on): 86400 -> `24h`, 604800 -> `7d`, 90 -> `90s`."""
    for unit in ("d", "h", "m"):
        size = _UNIT[unit]
        if seconds % size == 0 and seconds >= (2 * size if unit == "d" else size):
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
