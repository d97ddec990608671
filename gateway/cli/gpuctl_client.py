"""gpuctl's connection to the gateway's admin API: where it is, the token, and how a refusal
becomes the exit code and message of `gateway.cli.common`. Every gpuctl command module uses it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from gateway.cli.common import FORMATS, CliError, Exit, current_output, http_error, show

#: The exit codes by the names gpuctl's commands use (`common.Exit`).
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_UNAUTHENTICATED = (
    Exit.DENIED, Exit.USAGE, Exit.UNAVAILABLE, Exit.UNAUTHENTICATED)
#: -o csv is for `gpuctl usage`; any other command refuses it.
GPUCTL_FORMATS = (*FORMATS, "csv")


def config_path() -> Path:
    return Path(os.environ.get("GPUCTL_CONFIG", Path.home() / ".config" / "gpuctl" / "config.json"))


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        fail(EXIT_USAGE, f"cannot read {path}: {exc}; run `gpuctl login` again")
    return data if isinstance(data, dict) else {}


def fail(code: int, message: str) -> NoReturn:
    """Stop with `error: MESSAGE` and the exit code."""
    raise CliError(code, message)


def print_warnings(answer: Any) -> None:
    """The server's `warnings` on stderr, as kubectl prints an API server's; stdout keeps the result."""
    found = answer.get("warnings") if isinstance(answer, dict) else None
    for warning in found or []:
        click.echo(f"warning: {warning}", err=True)


@dataclass
class Client:
    server: str
    token: str
    verify: bool | str
    timeout_s: float = 30.0

    @property
    def output(self) -> str:
        """The output format asked for (-o), before or after the subcommand."""
        return current_output().format

    def request(self, method: str, path: str, *, flags: Mapping[str, str] | None = None, **kw: Any) -> httpx.Response:
        """The server's successful answer; otherwise `CliError` with the exit code of `common`.

        `flags` maps the API fields the command sent to the flags or arguments they came from,
        so that a refusal names what the person typed (`{"expires_in_s": "--for"}`).
        """
        if not self.server:
            raise CliError(EXIT_USAGE, "no server: pass --server URL, set GPUCTL_SERVER or run `gpuctl login`")
        if not self.token:
            raise CliError(EXIT_UNAUTHENTICATED, "no token: pass --token, set GPUCTL_TOKEN or run `gpuctl login`")
        url = self.server.rstrip("/") + "/api/v1" + path
        try:
            with httpx.Client(verify=self.verify, timeout=self.timeout_s) as client:
                response = client.request(method, url, headers={"authorization": f"Bearer {self.token}"}, **kw)
        except httpx.TimeoutException:
            raise CliError(EXIT_UNREACHABLE, f"{self.server} did not answer within {self.timeout_s:g} s; check that "
                                             "the gateway runs, or give it longer with --request-timeout") from None
        except httpx.HTTPError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise CliError(EXIT_UNREACHABLE, f"cannot verify the TLS certificate of {self.server}: {exc}; pass "
                                                 "--certificate-authority FILE (the CA that signed it)") from None
            raise CliError(EXIT_UNREACHABLE, f"cannot reach {self.server}: {exc}; "
                                             "check --server and that the gateway runs") from None
        if response.status_code >= 400:
            raise http_error(response.status_code, _reason(response), flags)
        return response

    send = request
    """The same; the name callers that retry (`audit tail`) use."""

    def get(self, path: str, *, flags: Mapping[str, str] | None = None, **params: Any) -> Any:
        """GET with query parameters (None ones left out); a refusal names a parameter as its flag."""
        query = {k: v for k, v in params.items() if v is not None}
        named = {k: "--" + k.replace("_", "-") for k in query} | dict(flags or {})
        return self.request("GET", path, params=query, flags=named).json()

    def show(self, data: Any, table: str) -> None:
        if self.output == "csv":
            fail(EXIT_USAGE, "-o csv is only for `gpuctl usage`; use -o json or -o yaml here")
        show(data, table)


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    return str(body.get("reason") or body.get("error") or body) if isinstance(body, dict) else str(body)
