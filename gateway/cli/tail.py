"""`gpuctl audit tail`: follow the audit log like `tail -f`.

The server keeps no subscription: the follower polls `GET /api/v1/audit?after=SEQ` with the
sequence number of the last record it printed, so it never prints a record twice or skips
one it may read, however long a poll takes, and it resumes after a dropped connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
import yaml

from gateway.cli.common import current_output
from gateway.cli.render import audit_stream_header, audit_stream_line

Record = dict[str, Any]
Fetch = Callable[[int | None, int | None], Sequence[Record]]
"""(after, limit) -> the records after sequence number `after` (all when None), oldest first;
with `limit`, only the newest `limit` of them."""


class Unavailable(Exception):
    """A poll failed in a way worth retrying (server unreachable or failing)."""


@dataclass
class Follow:
    """How to follow: what to show first, how often to poll, when to stop."""

    first: int
    """The newest records to show before following (0: only new ones)."""
    after: int | None = None
    """Start after this sequence number instead (all later records are shown)."""
    interval_s: float = 2.0
    timeout_s: float | None = None
    """Stop following after this long (None: until interrupted)."""
    once: bool = False
    """Show what there is and stop."""


def emitter(output: str) -> Callable[[Record], None]:
    """Print one record in the output format: a fixed-width line (under a header line unless
    --no-headers), a JSON line or a YAML document."""
    if output == "json":
        return lambda r: click.echo(json.dumps(r, sort_keys=True))
    if output == "yaml":
        return lambda r: click.echo("---\n" + yaml.safe_dump(r, sort_keys=True).rstrip())
    header = [] if current_output().no_headers else [audit_stream_header()]

    def line(record: Record) -> None:
        while header:  # before the first record only
            click.echo(header.pop())
        click.echo(audit_stream_line(record))

    return line


def follow(fetch: Fetch, emit: Callable[[Record], None], how: Follow, *, warn: Callable[[str], None],
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """Show the first records, then poll for new ones until `how` says stop; the last sequence
    number shown or skipped over (-1 when the log had none the caller may read).

    The first poll's failures are raised; later `Unavailable` failures are reported once
    through `warn` and retried at the same pace until a poll succeeds again.
    """
    deadline = None if how.timeout_s is None else clock() + how.timeout_s
    if how.after is not None:
        batch, cursor = fetch(how.after, None), how.after
    else:
        batch, cursor = fetch(None, max(how.first, 1)), -1
        if how.first == 0:
            cursor, batch = (int(batch[-1]["seq"]) if batch else -1), []
    cursor = _show(batch, emit, cursor)
    failing = False
    while not how.once:
        wait = how.interval_s if deadline is None else min(how.interval_s, deadline - clock())
        if wait <= 0:
            break
        sleep(wait)
        try:
            batch = fetch(cursor if cursor >= 0 else 0, None)
        except Unavailable as exc:
            if not failing:
                warn(f"{exc}; retrying every {how.interval_s:g} s")
            failing = True
            continue
        if failing:
            warn("reconnected")
        failing = False
        cursor = _show(batch, emit, cursor)
    return cursor


def _show(batch: Sequence[Record], emit: Callable[[Record], None], cursor: int) -> int:
    for record in batch:
        seq = int(record["seq"])
        if seq > cursor:  # a record is never shown twice, even if a server repeats it
            emit(record)
            cursor = seq
    return cursor
