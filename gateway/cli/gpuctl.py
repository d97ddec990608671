"""`gpuctl`: the admin CLI, talking to the gateway's /api/v1 with httpx.

Server and token come from flags, then `GPUCTL_SERVER` / `GPUCTL_TOKEN`, then the config file
`gpuctl login` writes (`$GPUCTL_CONFIG`, default ~/.config/gpuctl/config.json, mode 0600).

Exit codes, output options and table rendering are those of `gateway.cli.common`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from gateway.cli import gpuctl_admin, gpuctl_workloads
from gateway.cli.common import (
    DURATION,
    TIME,
    CliError,
    OutputGroup,
    examples,
    output_options,
    table,
)
from gateway.cli.gpuctl_client import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    GPUCTL_FORMATS,
    Client,
    config_path,
    fail,
    load_config,
    print_warnings,
)


@click.group(cls=OutputGroup, context_settings={"help_option_names": ["-h", "--help"]}, formats=GPUCTL_FORMATS,
             params=output_options(GPUCTL_FORMATS, "; csv: gpuctl usage only; also after the subcommand"),
             epilog=examples("gpuctl login --server https://gpu-gateway.example:8443 --token \"$TOKEN\"",
                             "gpuctl whoami -o json", "gpuctl audit list --decision denied --since 7d -o wide"))
@click.version_option(package_name="gpu-gateway", prog_name="gpuctl", message="%(prog)s %(version)s")
@click.option("--server", envvar="GPUCTL_SERVER", help="Gateway URL, e.g. https://gpu-gateway.example:8443.")
@click.option("--token", envvar="GPUCTL_TOKEN", help="Bearer token (JWT).")
@click.option("--certificate-authority", type=click.Path(exists=True, dir_okay=False),
              help="CA bundle to verify the gateway's certificate.")
@click.option("--insecure-skip-tls-verify", is_flag=True, help="Do not verify the certificate (never in production).")
@click.option("--request-timeout", default="30s", show_default=True, type=DURATION,
              help="How long to wait for an answer.")
@click.pass_context
def main(ctx: click.Context, server: str | None, token: str | None, certificate_authority: str | None,
         insecure_skip_tls_verify: bool, request_timeout: float) -> None:
    """gpuctl: manage gpu-gateway through its admin API (whoami, audit, usage, check, approvals, grants).

    Exit codes: 0 done or allowed, 1 denied or refused by the gateway, 2 bad usage or unreadable
    input, 3 gateway unreachable or failing, 4 not authenticated.
    """
    config = load_config() if ctx.invoked_subcommand != "login" else {}
    verify: bool | str = not insecure_skip_tls_verify
    if certificate_authority or config.get("certificate_authority"):
        verify = certificate_authority or str(config["certificate_authority"])
    ctx.obj = Client(server or str(config.get("server", "")), token or str(config.get("token", "")), verify,
                     request_timeout)


@main.command(epilog=examples("gpuctl login --server https://gpu-gateway.example:8443 --token \"$TOKEN\" "
                              "--certificate-authority ca.crt"))
@click.option("--server", "login_server", required=True, help="Gateway URL.")
@click.option("--token", "login_token", envvar="GPUCTL_TOKEN", required=True, help="Bearer token (or GPUCTL_TOKEN).")
@click.option("--certificate-authority", "login_ca", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def login(client: Client, login_server: str, login_token: str, login_ca: str | None) -> None:
    """Check the token against the server and save both in the config file (mode 0600)."""
    client.server, client.token = login_server, login_token
    if login_ca:
        client.verify = login_ca
    me = client.get("/whoami")
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"server": login_server, "token": login_token,
                   **({"certificate_authority": str(Path(login_ca).resolve())} if login_ca else {})}, f)
    os.chmod(path, 0o600)
    click.echo(f"logged in to {login_server} as {me['username']} (role {me['role'] or 'none'}); saved in {path}")


@main.command(epilog=examples("gpuctl whoami", "gpuctl whoami -o json"))
@click.pass_obj
def whoami(client: Client) -> None:
    """Who the token says you are, your role and teams, and your break-glass grants until they expire."""
    me = client.get("/whoami")
    text = table(["USER", "ROLE", "TEAMS", "GROUPS"],
                  [[me["username"], me["role"] or "-", ",".join(me["teams"]) or "-", ",".join(me["groups"])]])
    grants = me.get("grants") or []
    if grants:
        text += "\n\n" + table(["GRANT", "ROLE", "UNTIL (UTC)", "EXPIRES IN", "IN FORCE", "GRANTER", "REASON"], [
            [g["id"], g["role"], _when(g["expires_at"]), _left(g["expires_at"]), "yes" if g["in_force"] else "no",
             g["granter"], g["reason"]] for g in grants])
    client.show(me, text)


def _left(epoch: float) -> str:
    """`1h 5m`: how long until `epoch`."""
    minutes = max(int(epoch - time.time()) // 60, 0)
    return f"{minutes // 60}h {minutes % 60}m" if minutes >= 60 else f"{minutes}m"


@main.group(epilog=examples("gpuctl audit list --user alice --decision denied --since 7d", "gpuctl audit verify"))
def audit() -> None:
    """Read and verify the audit log."""


_AUDIT_FILTERS = [
    click.option("--user"), click.option("--action"),
    click.option("--decision", type=click.Choice(["allowed", "denied"])),
    click.option("--kind"), click.option("--namespace", "-n"), click.option("--name"),
    click.option("--since", type=TIME, help="ISO 8601, epoch seconds or an age like 7d."),
    click.option("--until", type=TIME, help="Same forms as --since."),
    click.option("--limit", type=int, help="The newest N records."),
]


def _audit_filters(f: Any) -> Any:
    for option in reversed(_AUDIT_FILTERS):
        f = option(f)
    return f


@audit.command("list", epilog=examples("gpuctl audit list --user alice --decision denied --since 7d",
                                       "gpuctl audit list --action settings -o wide", "gpuctl audit list --alerts"))
@_audit_filters
@click.option("--alerts", is_flag=True, help="Only GPU alerts from the node agents (action alert, docs/agent.md).")
@click.pass_obj
def audit_list(client: Client, /, alerts: bool = False, **filters: Any) -> None:
    """Audit records you may read, oldest first (times in UTC); -o wide adds owner, team and reason."""
    from gateway.cli.render import audit_cells, audit_table

    if alerts:
        filters["action"] = "alert"
    items = client.get("/audit", **filters)["items"]
    if alerts:
        cells = [audit_cells(i) for i in items]
        client.show(items, table(["#", "TIME", "ALERT", "TARGET", "OWNER", "REASON"], [
            [c["seq"], c["time"], c["rule"], c["target"], c["owner"], c["reason"]] for c in cells]))
        return
    client.show(items, audit_table(items))


@audit.command("export", epilog=examples("gpuctl audit export --since 30d > audit.jsonl"))
@_audit_filters
@click.pass_obj
def audit_export(client: Client, /, **filters: Any) -> None:
    """The same records as JSON lines, for archives and SIEMs."""
    response = client.request("GET", "/audit/export", params={k: v for k, v in filters.items() if v is not None})
    click.echo(response.text, nl=False)


@audit.command("tail", epilog=examples("gpuctl audit tail --decision denied -n research",
                                       "gpuctl -o json audit tail --once --after 4711"))
@_audit_filters
@click.option("--after", "after_seq", type=click.IntRange(min=0), metavar="SEQ",
              help="Start after this record number (every later record) instead of the newest --limit.")
@click.option("--interval", default="2s", show_default=True, type=DURATION, help="How often to poll the server.")
@click.option("--timeout", "timeout", type=DURATION, help="Stop following after this long, e.g. 30s or 10m (exit 0).")
@click.option("--once", is_flag=True, help="Print the records there are and exit (no following).")
@click.pass_obj
def audit_tail(client: Client, /, after_seq: int | None, interval: float, timeout: float | None, once: bool,
               **filters: Any) -> None:
    """Follow new audit records as they are written (like tail -f); Ctrl-C stops (exit 0).

    Shows the newest --limit records (default 10; 0 for only new ones) first. -o json prints one
    JSON object a line, -o yaml one document a record.
    """
    from gateway.cli.tail import Follow, Unavailable, emitter, follow

    if client.output == "csv":
        fail(EXIT_USAGE, "-o csv is only for `gpuctl usage`; audit tail prints table, json or yaml")
    limit = filters.pop("limit")
    if limit is not None and limit < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--limit")
    how = Follow(first=10 if limit is None else limit, after=after_seq, interval_s=interval, timeout_s=timeout,
                 once=once)
    params = {k: v for k, v in filters.items() if v is not None}

    def fetch(after: int | None, newest: int | None) -> list[dict[str, Any]]:
        query = {**params, **({"after": after} if after is not None else {}),
                 **({"limit": newest} if newest else {})}
        try:
            items: list[dict[str, Any]] = client.send("GET", "/audit", params=query).json()["items"]
        except CliError as exc:
            if exc.exit_code == EXIT_UNREACHABLE:
                raise Unavailable(exc.message) from None
            raise
        return items

    try:
        follow(fetch, emitter(client.output), how, warn=lambda m: click.echo(f"warning: {m}", err=True))
    except Unavailable as exc:
        fail(EXIT_UNREACHABLE, str(exc))
    except KeyboardInterrupt:
        sys.exit(0)


@audit.command("verify", epilog=examples("gpuctl audit verify", "gpuctl audit verify -o json"))
@click.pass_obj
def audit_verify(client: Client) -> None:
    """Walk the audit hash chain on the server; exit 1 when it is broken."""
    result = client.get("/audit/verify")
    text = (f"audit chain intact: {result['records']} records verified" if result["ok"]
            else f"audit chain broken at record {result['first_bad']}: {result['problem']}")
    client.show(result, text)
    sys.exit(0 if result["ok"] else EXIT_REFUSED)


@main.command(epilog=examples("gpuctl usage", "gpuctl usage --by team --since 30d",
                              "gpuctl usage --by user --since 2026-11-01 --until 2026-12-01 -o csv > november.csv"))
@click.option("--by", type=click.Choice(["user", "team", "role"]), default=None, help="Only one breakdown.")
@click.option("--since", type=TIME, help="Also GPU-hours from this time: ISO 8601, epoch seconds or an age like 30d.")
@click.option("--until", type=TIME, help="End of the GPU-hours period (default now).")
@click.pass_obj
def usage(client: Client, by: str | None, since: str | None, until: str | None) -> None:
    """GPUs reserved now, and with --since GPU-hours held, per user, team (and role), scoped to what
    you may read. -o csv prints the server's CSV: by,name,gpus_now,gpu_hours,since,until."""
    from gateway.cli.render import measured_table
    from gateway.telemetry.usage_report import usage_rows

    if client.output == "csv":
        query = {k: v for k, v in {"since": since, "until": until, "by": by, "format": "csv"}.items() if v}
        click.echo(client.request("GET", "/usage", params=query, flags={k: f"--{k}" for k in query}).text, nl=False)
        return
    data = client.get("/usage", since=since, until=until)
    limits = data.get("limits") or {}

    def limit(scope: str, name: str) -> str:
        caps = limits.get(f"{scope}s") or {}
        return "-" if name not in caps else "unlimited" if caps[name] is None else str(caps[name])

    rows = [[r.by, r.name, "-" if r.gpus_now is None else r.gpus_now, limit(r.by, r.name),
             "-" if r.gpu_hours is None else f"{r.gpu_hours:.1f}"] for r in usage_rows(data, by)]
    headers = ["BY", "NAME", "GPUS NOW", "LIMIT", "GPU-HOURS"] if since else ["BY", "NAME", "GPUS NOW", "LIMIT"]
    text = table(headers, [r if since else r[:4] for r in rows])
    measured = measured_table(data.get("measured") or {}, [f"{by}s"] if by in ("user", "team") else
                              ("users", "teams", "workloads"))
    client.show(data, text + "\n\n" + measured if measured else text)


def _check_body(file: Path, as_user: str | None, as_groups: tuple[str, ...], action: str, owner: str | None,
                client: Client) -> dict[str, Any]:
    from gateway.errors import GatewayError
    from gateway.whatif import parse_documents

    try:
        manifest = file.read_text()
        parse_documents(manifest, str(file))  # unreadable input stops here, naming the file
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot read {file}: {exc}")
    except GatewayError as exc:
        fail(EXIT_USAGE, str(exc))
    if as_groups and not as_user:
        raise click.UsageError("--as-group needs --as")
    if as_user:
        user, groups = as_user, list(as_groups)
    else:
        me = client.get("/whoami")
        user, groups = me["username"], list(me["groups"])
    body: dict[str, Any] = {"user": user, "groups": groups, "manifest": manifest, "action": action}
    if owner:
        body["owner"] = owner
    return body


@main.command("check", epilog=examples("gpuctl check -f job.yaml",
                                      "gpuctl check -f job.yaml --as bob --as-group gpu-researchers",
                                      "gpuctl check -f job.yaml --action kill --owner bob -o json"))
@click.option("-f", "--file", "file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Manifest (YAML or JSON; several documents or a List allowed).")
@click.option("--as", "as_user", help="Check as this user (administrators); default: you.")
@click.option("--as-group", "as_groups", multiple=True, help="A group of the --as user (repeatable).")
@click.option("--action", type=click.Choice(["launch", "modify", "kill", "exec"]), default="launch",
              show_default=True)
@click.option("--owner", help="For modify, kill, exec: the target's owner (default: its annotation).")
@click.pass_obj
def check(client: Client, file: Path, as_user: str | None, as_groups: tuple[str, ...], action: str,
          owner: str | None) -> None:
    """What-if with the policy in force: exit 0 when every object is allowed, 1 when one is denied,
    2 when the file cannot be read."""
    from gateway.cli.render import check_text

    body = _check_body(file, as_user, as_groups, action, owner, client)
    results = client.request("POST", "/check", json=body, flags={
        "manifest": str(file), "user": "--as", "groups": "--as-group", "owner": "--owner"}).json()["results"]
    client.show(results, "\n".join(check_text(r) for r in results))
    sys.exit(0 if all(r["allowed"] for r in results) else EXIT_REFUSED)


def _when(epoch: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(epoch), dt.UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return "-"


def _duration(value: str) -> float:
    """Seconds of a duration flag's value (`DURATION` reads options; this, values read otherwise)."""
    return float(DURATION.convert(value, None, None))


def _approvals_table(items: list[dict[str, Any]]) -> str:
    from gateway.cli.render import target_text

    return table(["ID", "STATE", "REQUESTER", "ACTION", "TARGET", "GPUS", "EXPIRES", "REASON", "CREATED",
                   "REVIEWER", "COMMENT"], [
        [a["id"], a["state"], a["requester"], a["action"], target_text(a["kind"], a["namespace"], a["name"]),
         a.get("gpus") or "-", _when(a.get("expires_at")), a.get("reason", ""), _when(a.get("created_at")),
         a.get("reviewer") or "-", a.get("review_comment") or ""] for a in items],
        wide=["CREATED", "REVIEWER", "COMMENT"])


@main.command("request", epilog=examples(
    'gpuctl request launch PyTorchJob research/llm-400b --gpus 6144 --reason "scaling run"',
    'gpuctl request kill Job research/stuck --reason "holds 64 GPUs idle" --expires-in 30m'))
@click.argument("action", type=click.Choice(["launch", "modify", "kill", "exec"]))
@click.argument("kind")
@click.argument("target", metavar="NAMESPACE/NAME")
@click.option("--reason", required=True, help="Why; the approver reads it.")
@click.option("--gpus", type=int, help="For launch and modify: the most GPUs it may ask for.")
@click.option("--expires-in", default="1h", show_default=True, type=DURATION,
              help="How long the approval may wait and be used (7d at most).")
@click.pass_obj
def request_approval(client: Client, action: str, kind: str, target: str, reason: str, gpus: int | None,
                     expires_in: float) -> None:
    """Ask a second person to let you do ACTION once on KIND NAMESPACE/NAME."""
    namespace, sep, name = target.partition("/")
    if not sep or not namespace or not name:
        raise click.BadParameter("give the target as NAMESPACE/NAME", param_hint="NAMESPACE/NAME")
    body: dict[str, Any] = {"action": action, "kind": kind, "namespace": namespace, "name": name,
                            "reason": reason, "expires_in_s": expires_in}
    if gpus is not None:
        body["gpus"] = gpus
    created = client.request("POST", "/approvals", json=body, flags={
        "expires_in_s": "--expires-in", "gpus": "--gpus", "reason": "--reason", "kind": "KIND",
        "namespace": "NAMESPACE/NAME", "name": "NAMESPACE/NAME"}).json()
    client.show(created, f"approval {created['id']} requested ({created['state']}); "
                         f"ask an approver to run: gpuctl approve {created['id']}")


@main.command("approvals", epilog=examples("gpuctl approvals --state pending", "gpuctl approvals -o wide"))
@click.option("--state", "state", type=click.Choice(["pending", "approved", "denied", "used", "expired"]))
@click.pass_obj
def list_approvals(client: Client, state: str | None) -> None:
    """Approval requests you made or may review."""
    items = [a for a in client.get("/approvals")["items"] if state is None or a["state"] == state]
    client.show(items, _approvals_table(items))


def _review(verdict: str) -> Any:
    @click.argument("approval_id", metavar="ID")
    @click.option("--comment", default="", help="Recorded in the audit log.")
    @click.pass_obj
    def run(client: Client, approval_id: str, comment: str) -> None:
        done = client.request("POST", f"/approvals/{approval_id}/{verdict}", json={"comment": comment},
                              flags={"comment": "--comment"}).json()
        client.show(done, f"approval {done['id']} is {done['state']}")
        print_warnings(done)
    return run


main.command("approve", help="Approve another person's request (never your own).",
             epilog=examples('gpuctl approve apv-1a2b3c --comment "ok, once"'))(_review("approve"))
main.command("deny", help="Deny another person's request.",
             epilog=examples('gpuctl deny apv-1a2b3c --comment "use the shared queue"'))(_review("deny"))


@main.command("grant", epilog=examples('gpuctl grant ivan lead --reason "on-call: stuck job" --for 30m'))
@click.argument("user")
@click.argument("role")
@click.option("--reason", required=True, help="Mandatory; stands out in the audit log.")
@click.option("--for", "duration", required=True, type=DURATION, help="How long, e.g. 30m or 2h (24h at most).")
@click.pass_obj
def grant(client: Client, user: str, role: str, reason: str, duration: float) -> None:
    """Break-glass: give USER the ROLE for a limited time (admins)."""
    created = client.request("POST", "/grants", json={"user": user, "role": role, "reason": reason,
                                                      "expires_in_s": duration},
                             flags={"expires_in_s": "--for", "user": "USER", "role": "ROLE", "reason": "--reason"}
                             ).json()
    client.show(created, f"grant {created['id']}: {user} holds {role} until {_when(created.get('expires_at'))} UTC")


@main.command("grants", epilog=examples("gpuctl grants", "gpuctl grants -o wide"))
@click.pass_obj
def list_grants(client: Client) -> None:
    """Break-glass grants (admins see all, others their own)."""
    items = client.get("/grants")["items"]
    client.show(items, table(["ID", "STATE", "USER", "ROLE", "UNTIL", "GRANTER", "REASON", "CREATED", "ENDED BY"], [
        [g["id"], g["state"], g["user"], g["role"], _when(g.get("expires_at")), g.get("granter", ""),
         g.get("reason", ""), _when(g.get("created_at")), g.get("ended_by") or "-"] for g in items],
        wide=["CREATED", "ENDED BY"]))


@main.command("revoke", epilog=examples("gpuctl revoke bg-4d5e6f"))
@click.argument("grant_id", metavar="ID")
@click.pass_obj
def revoke(client: Client, grant_id: str) -> None:
    """End a break-glass grant now."""
    done = client.request("DELETE", f"/grants/{grant_id}").json()
    client.show(done, f"grant {done['id']} is {done['state']}")


for _command in (*gpuctl_admin.COMMANDS, *gpuctl_workloads.COMMANDS):
    main.add_command(_command)

if __name__ == "__main__":
    main()
