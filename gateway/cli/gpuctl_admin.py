"""`gpuctl roles`, `gpuctl quota` and `gpuctl policy`: run-time settings (docs/admin.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.admission.overrides import SettingError, check_subject, split_target
from gateway.cli.common import DURATION, OutputGroup, examples, table
from gateway.cli.gpuctl_client import GPUCTL_FORMATS, Client, print_warnings

REPLACEABLE = ("policy.csv", "limits.yaml")


def _gpus(value: str | None, flag: str) -> int | str | None:
    """A GPU count, None for `unlimited`, or "unset" when the option was not given."""
    if value is None:
        return "unset"
    if value.lower() in ("unlimited", "none", "null"):
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of GPUs or `unlimited`", param_hint=flag) from None
    if number < 0:
        raise click.BadParameter("a GPU count cannot be negative", param_hint=flag)
    return number


def _shown(value: Any) -> str:
    return "unlimited" if value is None else str(value)


class _Target(click.types.StringParamType):
    """A quota target or binding subject (`team:vision`), checked as the gateway checks it before
    anything is sent; a bare name gets a hint."""

    def __init__(self, name: str, check: Callable[[str], object], hint: str) -> None:
        self.name, self.check, self.hint = name, check, hint

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            self.check(str(value))
        except SettingError as exc:
            hint = f" ({self.hint.format(value)})" if ":" not in str(value) and value else ""
            self.fail(f"{exc}{hint}", param, ctx)
        return str(value)


QUOTA_TARGET = _Target("target", split_target, "a team's: team:{0}")
SUBJECT = _Target("subject", check_subject, "a group's: group:{0}")


# ------------------------------------------------------------------------------ roles


@click.group("roles", cls=OutputGroup, formats=GPUCTL_FORMATS, invoke_without_command=True,
             epilog=examples("gpuctl roles", "gpuctl roles -o yaml"))
@click.pass_context
def roles(ctx: click.Context) -> None:
    """Role bindings (group:NAME or user:NAME -> roles); without a subcommand, list them."""
    if ctx.invoked_subcommand is not None:
        return
    client: Client = ctx.obj
    data = client.get("/roles")
    bindings = table(["SUBJECT", "ROLES", "SOURCE"],
                      [[b["subject"], ",".join(b["roles"]) or "(none)", b["source"]] for b in data["bindings"]])
    perms = table(["ROLE", "PERMISSIONS"],
                   [[r["name"], " ".join(f"{a}:{s}" for a, s in r["permissions"])] for r in data["roles"]])
    client.show(data, f"{bindings}\n\n{perms}")


@roles.command("bind", epilog=examples('gpuctl roles bind group:ml-newcomers intern --reason "onboarding"'))
@click.argument("subject", type=SUBJECT)
@click.argument("role", nargs=-1)
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@click.pass_obj
def roles_bind(client: Client, subject: str, role: tuple[str, ...], reason: str) -> None:
    """Give SUBJECT (group:NAME or user:NAME) exactly ROLE... (none: take every role away)."""
    done = client.request("PUT", f"/roles/bindings/{subject}", json={"roles": list(role), "reason": reason},
                          flags={"roles": "ROLE", "reason": "--reason"}).json()
    client.show(done, f"{subject}: {','.join(done['new']) or '(no role)'} (revision {done['revision']})")


@roles.command("unbind", epilog=examples('gpuctl roles unbind user:zoe --reason "left the team"'))
@click.argument("subject", type=SUBJECT)
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@click.pass_obj
def roles_unbind(client: Client, subject: str, reason: str) -> None:
    """Remove SUBJECT's run-time binding: the policy bundle's binding is in force again."""
    done = client.request("DELETE", f"/roles/bindings/{subject}", json={"reason": reason},
                          flags={"reason": "--reason"}).json()
    client.show(done, f"{subject}: run-time binding removed (revision {done['revision']})")


# ------------------------------------------------------------------------------ quotas


@click.group("quota", cls=OutputGroup, formats=GPUCTL_FORMATS,
             epilog=examples("gpuctl quota get team:vision",
                             'gpuctl quota set team:vision --max-concurrent-gpus 512 --reason "Q4 budget"'))
def quota() -> None:
    """GPU quotas per user:NAME, team:NAME and role:NAME."""


@quota.command("get", epilog=examples("gpuctl quota get", "gpuctl quota get team:vision -o json"))
@click.argument("target", required=False, type=QUOTA_TARGET)
@click.pass_obj
def quota_get(client: Client, target: str | None) -> None:
    """The quota in force for TARGET (user:NAME, team:NAME, role:NAME), or every quota."""
    if target:
        data = client.get(f"/quotas/{target}")
        items = [data]
    else:
        data = client.get("/quotas")
        items = data["items"]
    client.show(data, table(
        ["TARGET", "USED", "MAX CONCURRENT GPUS", "MAX GPUS PER WORKLOAD", "SOURCE"],
        [[q["target"], "-" if q.get("used") is None else q["used"],
          _shown(q["quota"]["max_concurrent_gpus"]) if q["quota"] else "(the role's)",
          _shown(q["quota"]["max_gpus_per_workload"]) if "max_gpus_per_workload" in q["quota"] else "-",
          q["source"]] for q in items]))


@quota.command("set", epilog=examples('gpuctl quota set team:vision --max-concurrent-gpus 512 --reason "Q4 budget"',
                                     'gpuctl quota set user:alice --max-concurrent-gpus unlimited --reason "deadline"'))
@click.argument("target", type=QUOTA_TARGET)
@click.option("--max-concurrent-gpus", help="GPUs held at once (a number or `unlimited`).")
@click.option("--max-gpus-per-workload", help="Roles only: the largest workload (a number or `unlimited`).")
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@click.pass_obj
def quota_set(client: Client, target: str, max_concurrent_gpus: str | None, max_gpus_per_workload: str | None,
              reason: str) -> None:
    """Set TARGET's quota at run time (every replica applies it within about a second)."""
    body: dict[str, Any] = {"reason": reason}
    for key, raw in (("max_concurrent_gpus", max_concurrent_gpus), ("max_gpus_per_workload", max_gpus_per_workload)):
        value = _gpus(raw, "--" + key.replace("_", "-"))
        if value != "unset":
            body[key] = value
    if len(body) == 1:
        raise click.UsageError("give --max-concurrent-gpus and/or --max-gpus-per-workload")
    done = client.request("PUT", f"/quotas/{target}", json=body, flags={
        "max_concurrent_gpus": "--max-concurrent-gpus", "max_gpus_per_workload": "--max-gpus-per-workload",
        "reason": "--reason"}).json()
    new = ", ".join(f"{k}={_shown(v)}" for k, v in sorted(done["new"].items()))
    client.show(done, f"{target}: {new} (revision {done['revision']})")
    print_warnings(done)


@quota.command("unset", epilog=examples('gpuctl quota unset team:vision --reason "back to the bundle"'))
@click.argument("target", type=QUOTA_TARGET)
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@click.pass_obj
def quota_unset(client: Client, target: str, reason: str) -> None:
    """Remove TARGET's run-time quota: the policy bundle's is in force again."""
    done = client.request("DELETE", f"/quotas/{target}", json={"reason": reason}, flags={"reason": "--reason"}).json()
    client.show(done, f"{target}: run-time quota removed (revision {done['revision']})")
    print_warnings(done)


# ------------------------------------------------------------------------------ policy


def _read_proposal(directory: Path) -> dict[str, str]:
    files = {}
    for name in REPLACEABLE:
        path = directory / name
        try:
            files[name] = path.read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--from") from None
    return files


_FROM = click.option("--from", "directory", required=True, type=click.Path(exists=True, file_okay=False,
                     path_type=Path), help="Directory holding the proposed policy.csv and limits.yaml.")


@click.group("policy", cls=OutputGroup, formats=GPUCTL_FORMATS,
             epilog=examples("gpuctl policy get --to ./proposal", "gpuctl policy diff --from ./proposal"))
def policy() -> None:
    """View, diff and replace the policy (policy.csv and limits.yaml)."""


@policy.command("get", epilog=examples("gpuctl policy get", "gpuctl policy get --to ./proposal"))
@click.option("--to", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Write the files into this directory instead of printing them.")
@click.pass_obj
def policy_get(client: Client, directory: Path | None) -> None:
    """The policy in force: version, digest, source and files."""
    data = client.get("/policy")
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in data["files"].items():
            (directory / name).write_text(text)
    header = f"# version {data['version']}  digest {data['digest']}  source {data['source']}"
    body = "" if directory else "".join(f"\n# ---- {n}\n{t}" for n, t in sorted(data["files"].items()))
    client.show(data, header + (f"\nwritten to {directory}" if directory else body))


@policy.command("diff", epilog=examples("gpuctl policy diff --from ./proposal"))
@_FROM
@click.pass_obj
def policy_diff(client: Client, directory: Path) -> None:
    """Validate the files in --from against the policy in force and show the diff, and the running
    and queued workloads (of those you may read) whose launch it would have denied (exit 1 if invalid)."""
    data = client.request("POST", "/policy/diff", json={"files": _read_proposal(directory)},
                          flags={"files": "--from"}).json()
    if not data["valid"]:
        client.show(data, f"invalid: {data['error']}")
        raise SystemExit(1)
    note = "applying it needs a second admin's approval (gpuctl policy request)" if data["needs_approval"] else ""
    text = f"{data['diff'] or 'no change'}\n# proposal {data['digest']} {note}".rstrip()
    denied = data.get("would_deny") or []
    if denied:
        text += f"\n\n# it would have denied {len(denied)} running or queued workload(s):\n" + table(
            ["STATE", "WORKLOAD", "OWNER", "TEAM", "GPUS", "RULE", "REASON"],
            [[w["state"], f"{w['resource']} {w['namespace']}/{w['name']}", w["owner"], w["team"] or "-", w["gpus"],
              w["rule"], w["reason"]] for w in denied])
    elif "would_deny" in data:
        text += "\n# it would have denied none of the running and queued workloads you may read"
    client.show(data, text)


@policy.command("request", epilog=examples('gpuctl policy request --from ./proposal --reason "tighten interns"'))
@click.option("--from", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory holding the proposed policy.csv and limits.yaml.")
@click.option("--digest", help="The proposal's digest instead (as a refused apply or revert names it).")
@click.option("--reason", required=True, help="Why; the approver reads it.")
@click.option("--expires-in", default="1h", show_default=True, type=DURATION,
              help="How long the approval may wait and be used (7d at most).")
@click.pass_obj
def policy_request(client: Client, directory: Path | None, digest: str | None, reason: str,
                   expires_in: float) -> None:
    """Ask a second admin to approve replacing the policy with the files in --from."""
    if (directory is None) == (digest is None):
        raise click.UsageError("give either --from DIR or --digest DIGEST")
    if directory is not None:
        check = client.request("POST", "/policy/diff", json={"files": _read_proposal(directory)},
                               flags={"files": "--from"}).json()
        if not check["valid"]:
            client.show(check, f"invalid: {check['error']}")
            raise SystemExit(1)
        digest = check["digest"]
    created = client.request("POST", "/approvals", json={
        "action": "policy-change", "name": digest, "reason": reason, "expires_in_s": expires_in},
        flags={"name": "--digest", "reason": "--reason", "expires_in_s": "--expires-in"}).json()
    client.show(created, f"approval {created['id']} requested for proposal {digest}; ask another admin to run: "
                         f"gpuctl approve {created['id']}, then apply (or revert) again")


@policy.command("apply", epilog=examples('gpuctl policy apply --from ./proposal --reason "tighten interns"'))
@_FROM
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@click.pass_obj
def policy_apply(client: Client, directory: Path, reason: str) -> None:
    """Replace the policy with the files in --from (validated; every replica applies it)."""
    done = client.request("PUT", "/policy", json={"files": _read_proposal(directory), "reason": reason},
                          flags={"files": "--from", "reason": "--reason"}).json()
    client.show(done, f"{done['diff'] or 'no change'}\n# policy {done['digest']} in force, version {done['version']}")


@policy.command("revert", epilog=examples('gpuctl policy revert --reason "the change broke queueing"'))
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@click.pass_obj
def policy_revert(client: Client, reason: str) -> None:
    """Go back to the policy files the gateway was started with."""
    done = client.request("DELETE", "/policy", json={"reason": reason}, flags={"reason": "--reason"}).json()
    client.show(done, f"{done['diff'] or 'no change'}\n# the files' policy {done['digest']} is in force again")


#: The commands `gpuctl` adds from this module.
COMMANDS: tuple[click.Command, ...] = (roles, quota, policy)
