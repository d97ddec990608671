"""What every command of `gpu-gateway` and `gpuctl` shares: exit codes, errors, output and flags.

Exit codes, one rule for both CLIs (README, "Command line"):

    0  allowed, done
    1  denied, or refused by the server (403, 404, 409, 422; a check or a verification that fails)
    2  unreadable input or bad usage (click's usage errors, a file that cannot be read, a value the
       server could not use: HTTP 400)
    3  the server or the database cannot be reached or failed (connection errors, timeouts, 5xx)
    4  not authenticated (401, no token, an expired token)

Every failure leaves through `CliError` (`error: MESSAGE` on stderr, then its exit code), built by
`http_error` for an HTTP answer or `gateway_error` for a `GatewayError`; a command group made with
`group_class=ExitGroup` (or `OutputGroup`) turns any `GatewayError` a command lets through into
one, so no traceback reaches a person.

Output (gpuctl): `OutputGroup` gives every command under it `-o table|wide|json|yaml` and
`--no-headers`, accepted before or after the subcommand (the later wins). A command prints with
`show(data, text)` and builds its tables with `table(...)`, which leaves out the header line
with `--no-headers` and shows the columns named `wide` only with `-o wide`; a new command needs
nothing more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
import yaml

from gateway.errors import AuthUnavailable, ConfigError, GatewayError, InvalidToken, RequestError, StoreError
from gateway.times import parse_duration, parse_time

if TYPE_CHECKING:
    from gateway.store.base import Store


class Exit(IntEnum):
    OK = 0
    DENIED = 1
    USAGE = 2
    UNAVAILABLE = 3
    UNAUTHENTICATED = 4


class CliError(click.ClickException):
    """A failure a person can act on: `error: MESSAGE` on stderr and the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = int(code)

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def status_exit(status: int) -> Exit:
    """The exit code of an HTTP error status."""
    if status == 401:
        return Exit.UNAUTHENTICATED
    if status in (408, 429) or status >= 500 or status == 0:
        return Exit.UNAVAILABLE
    if status in (400, 413, 414, 415):
        return Exit.USAGE
    return Exit.DENIED


def flagged(reason: str, flags: Mapping[str, str] | None) -> str:
    """`reason` with a leading API field name replaced by the flag or argument the person typed.

    The API's messages start with the field they are about (`expires_in_s must be ...`); the
    person gave `--for`.
    """
    for field, flag in (flags or {}).items():
        if re.match(rf"{re.escape(field)}\b", reason):
            return flag + reason[len(field):]
    return reason


def http_error(status: int, reason: str, flags: Mapping[str, str] | None = None) -> CliError:
    """What a person reads, and the exit code, when the server answers `status` (4xx, 5xx).

    The reason of a 400 (a value the server could not use) names the flag through `flags`.
    """
    if status_exit(status) == Exit.USAGE:
        reason = flagged(reason, flags)
    if status == 401:
        if "expired" in reason:
            return CliError(Exit.UNAUTHENTICATED, "token expired; run `gpuctl login --server URL --token NEW_TOKEN` "
                                                  "(or set GPUCTL_TOKEN) with a fresh one")
        return CliError(Exit.UNAUTHENTICATED, f"not authenticated: {reason}; run `gpuctl login` with a valid token")
    if status == 403:
        hint = "" if "ask" in reason else "; `gpuctl whoami` shows your role: ask an administrator if you need this"
        return CliError(Exit.DENIED, f"forbidden: {reason}{hint} (403)")
    if status == 503:
        return CliError(Exit.UNAVAILABLE, f"the gateway cannot answer now (503): {reason}")
    if status >= 500:
        return CliError(Exit.UNAVAILABLE, f"the gateway failed ({status}): {reason}; its log says more")
    return CliError(status_exit(status), f"{reason} ({status})")


def gateway_error(exc: GatewayError) -> CliError:
    """The exit code of a gateway error: bad input or settings 2, a store or provider down 3,
    a refused token 4, a refusal (a state conflict, a missing approval) 1."""
    status = getattr(exc, "status", None)  # errors of a remote API keep its status
    if isinstance(exc, InvalidToken):
        code = Exit.UNAUTHENTICATED
    elif isinstance(exc, StoreError | AuthUnavailable):
        code = Exit.UNAVAILABLE
    elif isinstance(exc, RequestError | ConfigError):
        code = Exit.USAGE
    elif isinstance(status, int):
        code = status_exit(status)
    else:
        code = Exit.DENIED
    return CliError(code, str(exc))


class ExitGroup(click.Group):
    """A command group whose commands' `GatewayError`s leave through `gateway_error`."""

    group_class = type  # subgroups are of the same class

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatewayError as exc:
            raise gateway_error(exc) from exc


# ------------------------------------------------------------------------------ output

FORMATS = ("table", "wide", "json", "yaml")
_KEY = "gateway.cli.output"


@dataclass
class Output:
    """How the command prints: `format` one of FORMATS (or a command's own, such as csv)."""

    format: str = "table"
    no_headers: bool = False


def current_output() -> Output:
    """The output settings of the command running now (defaults outside a command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return Output()
    found: Output = ctx.meta.setdefault(_KEY, Output())
    return found


def _set_format(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta.setdefault(_KEY, Output()).format = value


def _set_no_headers(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta.setdefault(_KEY, Output()).no_headers = True


def output_options(formats: Sequence[str] = FORMATS, help_extra: str = "") -> list[click.Option]:
    """`-o/--output` and `--no-headers`, which set `current_output()` and pass no argument."""
    return [
        click.Option(["-o", "--output"], type=click.Choice(list(formats)), expose_value=False, callback=_set_format,
                     help=f"Output format (default table){help_extra}."),
        click.Option(["--no-headers"], is_flag=True, expose_value=False, callback=_set_no_headers,
                     help="Tables without their header line."),
    ]


class OutputGroup(ExitGroup):
    """Gives every command added under it the output options, so that `gpuctl -o json whoami`
    and `gpuctl whoami -o json` both work. A command that declares its own `-o` keeps it."""

    def __init__(self, *args: Any, formats: Sequence[str] = FORMATS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.formats = formats
        """What `-o` accepts on the commands under this group."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if isinstance(cmd, OutputGroup):
            cmd.formats = self.formats
        if not any("-o" in getattr(p, "opts", ()) for p in cmd.params):
            cmd.params.extend(output_options(self.formats))
        super().add_command(cmd, name)


def show(data: Any, text: str) -> None:
    """Print `data` as JSON or YAML, or `text` (built with `table`) for table and wide."""
    fmt = current_output().format
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif fmt == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=True).rstrip())
    elif fmt in ("table", "wide"):
        click.echo(text)
    else:
        raise CliError(Exit.USAGE, f"-o {fmt} is not for this command; use table, wide, json or yaml")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, wide: Sequence[str] = (),
          empty: str = "nothing to show") -> str:
    """Aligned columns; the `wide` headers (and their cells) only with `-o wide`, no header line
    with `--no-headers`, `empty` when there are no rows."""
    if not rows:
        return empty
    out = current_output()
    keep = [i for i, h in enumerate(headers) if out.format == "wide" or h not in wide]
    lines = [[str(r[i]) for i in keep] for r in rows]
    if not out.no_headers:
        lines.insert(0, [headers[i] for i in keep])
    widths = [max(len(line[c]) for line in lines) for c in range(len(keep))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


# ------------------------------------------------------------------------------ flags and help


class _Time(click.types.StringParamType):
    """A time as `gateway.times.parse_time` reads it, checked here and passed on as typed."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


class _Duration(click.types.FloatParamType):
    """A duration as `gateway.times.parse_duration` reads it, in seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = _Time()
"""`--since 7d`, `--until 2026-12-01`, `--since 1764115200`: refused with the flag named."""
DURATION = _Duration()
"""`--for 30m`, `--interval 2s`: seconds, refused with the flag named."""


def examples(*lines: str) -> str:
    """A command's `--help` epilog: the example command lines, kept as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


# ------------------------------------------------------------------------------ the store


def open_store(state: Path | None, database_url: str | None) -> Store:
    """The ledger a read-only command reads: the SQLite state file or the PostgreSQL database."""
    if (state is None) == (database_url is None):
        raise click.UsageError("give exactly one of --state PATH and --database-url URL")
    try:
        if database_url is not None:
            from gateway.store.postgres import PostgresStore

            return PostgresStore(database_url, readonly=True)
        from gateway.store.sqlite import SQLiteStore

        assert state is not None
        if not state.exists():
            raise CliError(Exit.USAGE, f"state file {state} does not exist")
        return SQLiteStore(state, readonly=True)
    except GatewayError as exc:
        raise gateway_error(exc) from exc
