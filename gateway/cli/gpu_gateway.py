"""`gpu-gateway`: serve the webhook, check a manifest, read and verify the audit log, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from gateway.cli.agent import agent
from gateway.cli.common import TIME, CliError, Exit, ExitGroup, examples, gateway_error, open_store
from gateway.cli.controller import controller
from gateway.cli.options import agent_auth_options, auth_options, checkpoint_options, scheduler_options, store_source
from gateway.cli.queue import queue
from gateway.config import (
    AgentAuthSettings,
    AuthSettings,
    CheckpointSettings,
    FailureMode,
    PolicySettings,
    SchedulerSettings,
    ServerSettings,
    Settings,
    StoreSettings,
)
from gateway.errors import GatewayError
from gateway.net import is_loopback
from gateway.times import parse_time, with_time


def _parse_time(value: str | None) -> float | None:
    """Epoch seconds of a `TIME` option's value (checked when the flag was read)."""
    return None if value is None else parse_time(value)


@click.group(cls=ExitGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=examples("gpu-gateway serve --insecure-http --host 127.0.0.1 --port 8080 --state ./gpu-gateway.db",
                             "gpu-gateway demo", "gpu-gateway audit list --state ./gpu-gateway.db --since 1d"))
@click.version_option(package_name="gpu-gateway", prog_name="gpu-gateway", message="%(prog)s %(version)s")
def main() -> None:
    """gpu-gateway: access control and GPU quotas for Kubernetes, as an admission webhook.

    Exit codes: 0 done or allowed, 1 denied or refused, 2 bad usage or unreadable input,
    3 the store or a server unreachable or failing, 4 not authenticated.
    """


@main.command(epilog=examples(
    "gpu-gateway serve --insecure-http --host 127.0.0.1 --port 8080 --state ./gpu-gateway.db",
    "gpu-gateway serve --state /var/lib/gpu-gateway/gpu-gateway.db --cert tls.crt --key tls.key "
    "--jwt-secret-file jwt.secret --jwt-issuer local --jwt-audience gpuctl"))
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=int)
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), default=Path("gpu-gateway.db"),
              show_default=True, help="SQLite state file (ledger and audit log).")
@click.option("--database-url", metavar="URL", envvar="GPU_GATEWAY_DATABASE_URL",
              help="PostgreSQL shared by several replicas (postgresql://USER@HOST:PORT/DB), instead of "
                   "the --state file; the history key then lives beside --state. Also from "
                   "GPU_GATEWAY_DATABASE_URL, which keeps a password off the command line.")
@click.option("--policy-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Policy bundle (model.conf, policy.csv, limits.yaml); default: the bundled policies/.")
@click.option("--insecure-http", is_flag=True, help="Plain HTTP, loopback only (local trials).")
@click.option("--cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="TLS certificate (PEM).")
@click.option("--key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="TLS private key (PEM).")
@click.option("--failure-mode", type=click.Choice(["closed", "open"]), default="closed", show_default=True,
              help="What a GPU request gets when the gateway cannot decide it.")
@click.option("--max-body-bytes", type=int, default=8 * 1024 * 1024, show_default=True)
@click.option("--decision-budget-ms", type=int, default=2000, show_default=True,
              help="Answer every /validate within this; a GPU request the database cannot decide by then "
                   "gets the failure mode (keep 1.25x it below the webhooks' timeoutSeconds).")
@click.option("--shutdown-delay", "shutdown_delay_s", type=float, default=0.0, show_default=True,
              help="Seconds to keep serving after SIGTERM with /readyz failing, before draining.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, hidden=True)
@auth_options
@agent_auth_options
@checkpoint_options
@scheduler_options(with_controller_flag=True)
def serve(host: str, port: int, state: Path, database_url: str | None, policy_dir: Path | None, insecure_http: bool,
          cert: Path | None, key: Path | None, failure_mode: str, max_body_bytes: int,
          decision_budget_ms: int, shutdown_delay_s: float, log_level: str, workers: int, auth: AuthSettings,
          checkpoints: CheckpointSettings | None, scheduler: SchedulerSettings,
          agent_auth: AgentAuthSettings | None) -> None:
    """Run the admission webhook (POST /mutate, /validate; GET /healthz, /readyz, /metrics).

    With --oidc-issuer or --jwt-secret-file, the admin API (GET /api/v1/whoami) accepts bearer tokens.
    """
    from gateway.server import run_server

    if insecure_http and not is_loopback(host):
        raise click.UsageError("--insecure-http serves plain HTTP and is only allowed on a loopback host")
    try:
        settings = Settings(
            server=ServerSettings(host=host, port=port, insecure_http=insecure_http, cert_file=cert,
                                  key_file=key, max_body_bytes=max_body_bytes,
                                  decision_budget_ms=decision_budget_ms, shutdown_delay_s=shutdown_delay_s),
            store=StoreSettings(path=state, database_url=database_url),
            policy=PolicySettings(directory=policy_dir),
            auth=auth,
            failure_mode=FailureMode(failure_mode),
            checkpoints=checkpoints,
            scheduler=scheduler,
            agent_auth=agent_auth,
        )
        run_server(settings, log_level=log_level.upper())
    except GatewayError as exc:
        raise gateway_error(exc) from exc


@main.group(epilog=examples("gpu-gateway audit verify --state ./gpu-gateway.db",
                            "gpu-gateway audit list --state ./gpu-gateway.db --decision denied --since 7d"))
def audit() -> None:
    """Read and verify the tamper-evident audit log."""


@audit.command("verify", epilog=examples(
    "gpu-gateway audit verify --state ./gpu-gateway.db",
    "gpu-gateway audit verify --database-url postgresql://audit@db:5432/gpu_gateway --checkpoints ./checkpoints "
    "--public-key audit.key.pub -o json"))
@store_source
@click.option("--checkpoints", type=click.Path(exists=True, path_type=Path),
              help="Also compare the log with the signed checkpoints in this directory (or file).")
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The checkpoint key's public half (PATH.pub of `audit keygen`).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def audit_verify(state: Path | None, database_url: str | None, checkpoints: Path | None, public_key: Path | None,
                 output: str) -> None:
    """Walk the hash chain; exit 0 when intact, 1 naming the first bad record otherwise.

    With --checkpoints and --public-key, the log must also match its signed checkpoints: a
    truncated tail, a rewritten chain, a fork or a bad checkpoint exits 1, naming the first
    record the log cannot be trusted from and since when.
    """
    if (checkpoints is None) != (public_key is None):
        raise click.UsageError("--checkpoints and --public-key go together")
    if checkpoints is not None and public_key is not None:
        from gateway.cli.verify_checkpoints import verify_with_checkpoints

        sys.exit(verify_with_checkpoints(open_store(state, database_url), checkpoints, public_key, output))
    result = open_store(state, database_url).verify()
    if output == "json":
        click.echo(json.dumps({"ok": result.ok, "records": result.rows, "first_bad": result.first_bad,
                               "problem": result.problem}))
    else:
        click.echo(result.describe(), err=not result.ok)
    sys.exit(0 if result.ok else 1)


@audit.command("keygen", epilog=examples("gpu-gateway audit keygen --out /secure/audit.key"))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private key (mode 0600); the public key goes to OUT.pub.")
def audit_keygen(out: Path) -> None:
    """Make an Ed25519 key pair for signed audit checkpoints (`serve --checkpoint-key`)."""
    from gateway.audit.signing.checkpointer import generate_key

    if out.exists():
        raise CliError(Exit.DENIED, f"{out} exists; refusing to overwrite a signing key")
    try:
        pub = generate_key(out)
    except OSError as exc:
        raise CliError(Exit.USAGE, f"cannot write {out}: {exc}") from exc
    click.echo(f"private key {out} (keep it outside the database), public key {pub}")


@audit.command("list", epilog=examples("gpu-gateway audit list --state ./gpu-gateway.db --user alice --since 7d",
                                       "gpu-gateway audit list --state ./gpu-gateway.db --grants -o json"))
@store_source
@click.option("--user", help="Only this requester.")
@click.option("--action", type=click.Choice(["launch", "modify", "kill", "exec", "approval", "grant", "alert",
                                                "heartbeat"]))
@click.option("--decision", type=click.Choice(["allowed", "denied"]))
@click.option("--since", type=TIME, help="From this time (ISO 8601, epoch seconds or an age like 7d).")
@click.option("--until", type=TIME, help="Before this time (same forms).")
@click.option("--limit", type=int)
@click.option("--grants", is_flag=True, help="Only break-glass records: grants and admissions under one.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def audit_list(state: Path | None, database_url: str | None, user: str | None, action: str | None, decision: str | None,
               since: str | None, until: str | None, limit: int | None, grants: bool, output: str) -> None:
    """List audit records, oldest first, as a table (times in UTC) or JSON lines (with `time` beside `ts`)."""
    from gateway.audit.ports import AuditQuery
    from gateway.audit.records import is_break_glass
    from gateway.cli.render import audit_table

    query = AuditQuery(user=user, action=action, decision=decision, since=_parse_time(since),
                       until=_parse_time(until), limit=None if grants else limit)
    rows = list(open_store(state, database_url).audit_rows(query))
    if grants:
        rows = [r for r in rows if is_break_glass(r)][:limit]
    if output == "json":
        for row in rows:
            click.echo(json.dumps(with_time(row), sort_keys=True))
    else:
        click.echo(audit_table(rows))


@audit.command("history", epilog=examples(
    "gpu-gateway audit history PyTorchJob research/llm-70b --state ./gpu-gateway.db --since 2026-11-19"))
@click.argument("kind")
@click.argument("ref", metavar="NAMESPACE/NAME")
@store_source
@click.option("--since", type=TIME, help="From this time (ISO 8601, epoch seconds or an age like 7d).")
@click.option("--until", type=TIME, help="Before this time (same forms).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def audit_history(kind: str, ref: str, state: Path | None, database_url: str | None, since: str | None,
                  until: str | None, output: str) -> None:
    """The timeline of one object: who did what to it, decided how, and what each change was.

    KIND is the kind or its resource, in any case (PyTorchJob, pytorchjobs). NAME alone
    means a cluster-scoped object.
    """
    from gateway.audit.ports import AuditQuery
    from gateway.cli.render import history_text

    namespace, _, name = ref.rpartition("/")
    if not name:
        raise click.BadParameter(f"{ref!r} is not NAMESPACE/NAME", param_hint="NAMESPACE/NAME")
    query = AuditQuery(kind=kind, namespace=namespace, name=name, since=_parse_time(since),
                       until=_parse_time(until))
    rows = list(open_store(state, database_url).audit_rows(query))
    if output == "json":
        for row in rows:
            click.echo(json.dumps(with_time(row), sort_keys=True))
    else:
        click.echo(history_text(rows))


@main.command(epilog=examples("gpu-gateway usage --state ./gpu-gateway.db",
                              "gpu-gateway usage --state ./gpu-gateway.db --since 7d -o json"))
@store_source
@click.option("--since", type=TIME, help="Also GPU-hours measured by the node agents from this time (ISO 8601, "
                                         "epoch seconds or an age like 7d).")
@click.option("--until", type=TIME, help="End of that period (default now).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def usage(state: Path | None, database_url: str | None, since: str | None, until: str | None, output: str) -> None:
    """GPUs reserved now, per user and per team (with --since, measured GPU-hours too)."""
    import time

    from gateway.cli.render import measured_table, usage_table

    start, end = _parse_time(since), _parse_time(until) or time.time()
    store = open_store(state, database_url)
    try:
        users, teams = store.gpus_by_user(), store.gpus_by_team()
        measured = store.measured_usage(start, end) if start is not None else None
    except GatewayError as exc:
        raise gateway_error(exc) from exc
    finally:
        store.close()
    users, teams = ({k: v for k, v in m.items() if v} for m in (users, teams))
    if output == "json":
        body: dict[str, Any] = {"users": users, "teams": teams}
        if measured is not None:
            body["measured"] = {"since": start, "until": end, **measured}
        click.echo(json.dumps(body, sort_keys=True))
    else:
        table = measured_table(measured or {})
        click.echo(usage_table(users, teams) + ("\n\n" + table if table else ""))


@main.command(epilog=examples("gpu-gateway check --user alice --group gpu-interns --group team:vision -f job.yaml",
                              "gpu-gateway check --user carol --group gpu-leads --action kill --owner bob -f job.yaml "
                              "-o json"))
@click.option("--user", required=True, help="Username the API server would pass.")
@click.option("--group", "groups", multiple=True, help="A group of the user (repeatable).")
@click.option("-f", "--filename", "file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              required=True, help="Manifest (YAML or JSON; several documents allowed).")
@click.option("--action", type=click.Choice(["launch", "modify", "kill", "exec"]), default="launch",
              show_default=True)
@click.option("--owner", help="Owner of the target for modify/kill/exec (default: its owner annotation).")
@click.option("--owner-team", help="Team of the target for modify/kill/exec.")
@click.option("--namespace", "-n", help="Namespace, when the manifest has none (default: default).")
@click.option("--policy-dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@store_source
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def check(user: str, groups: tuple[str, ...], file: Path, action: str, owner: str | None,
          owner_team: str | None, namespace: str | None, policy_dir: Path | None, state: Path | None,
          database_url: str | None, output: str) -> None:
    """What-if: decide a manifest for a user, writing nothing.

    With --state or --database-url (read only), against the GPUs in use now, as the gateway
    would; without, as if none were (the output says so). Exit 0 when every document is
    allowed, 1 when one is denied, 2 on bad input.
    """
    from gateway.cli.check import run_check

    store = open_store(state, database_url) if state is not None or database_url is not None else None
    try:
        results = run_check(user=user, groups=groups, file=file, action=action, owner=owner,
                            owner_team=owner_team, namespace=namespace, policy_dir=policy_dir, store=store)
    except OSError as exc:
        raise CliError(Exit.USAGE, f"cannot read {file}: {exc}") from exc
    except GatewayError as exc:
        raise gateway_error(exc) from exc
    finally:
        if store is not None:
            store.close()
    from gateway.cli.render import check_text

    for result in results:
        click.echo(json.dumps(result, sort_keys=True) if output == "json" else check_text(result))
    sys.exit(0 if all(r["allowed"] for r in results) else 1)


@main.command(epilog=examples("gpu-gateway demo", "gpu-gateway demo --keep ./demo-state"))
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the demo's state in this directory instead of a temporary one.")
def demo(keep: Path | None) -> None:
    """Run the gateway on loopback and replay a short sabotage scenario through it."""
    from gateway.cli.demo import run_demo

    sys.exit(run_demo(keep))


main.add_command(agent)
main.add_command(queue)
main.add_command(controller)

if __name__ == "__main__":
    main()
