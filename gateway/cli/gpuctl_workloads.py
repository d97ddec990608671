"""`gpuctl workloads`, `gpuctl queue` and `gpuctl describe`: what people hold and why they wait."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import click

from gateway.cli.common import examples, table
from gateway.cli.gpuctl_client import Client


def _since(text: str) -> str:
    """An RFC 3339 time as the other gpuctl tables show times (UTC, to the minute)."""
    try:
        return dt.datetime.fromisoformat(text).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(text)


@click.command("workloads", epilog=examples("gpuctl workloads --team vision -n research",
                                              "gpuctl workloads --user alice -o json"))
@click.option("--user", help="Only workloads this user owns.")
@click.option("--team", help="Only workloads of this team.")
@click.option("-n", "--namespace", help="Only this namespace.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace (the default).")
@click.pass_obj
def workloads(client: Client, user: str | None, team: str | None, namespace: str | None,
              all_namespaces: bool) -> None:
    """Workloads holding GPUs and waiting in the queue that you may see: yours, your team's if you
    lead it, all if you are an administrator."""
    if namespace and all_namespaces:
        raise click.UsageError("give -n NAMESPACE or -A, not both")
    data = client.get("/workloads", user=user, team=team, namespace=namespace)
    client.show(data, table(["NAMESPACE", "KIND", "NAME", "OWNER", "TEAM", "GPUS", "PODS", "STATE", "SINCE"], [
        [i["namespace"], i["kind"], i["name"], i["owner"] or "-", i["team"] or "-", i["gpus"], i["pods"], i["state"],
         _since(i["since"])] for i in data["items"]]))


@click.command("queue", epilog=examples("gpuctl queue", "gpuctl queue -o json"))
@click.pass_obj
def queue(client: Client) -> None:
    """Workloads waiting in the GPU queue that you may see, with their place in the whole queue and
    why they wait (the JSON of `gpu-gateway queue -o json`)."""
    from gateway.cli.queue import queue_table

    data = client.get("/queue")
    client.show(data, queue_table(data["items"]))


@click.command("describe", epilog=examples("gpuctl describe PyTorchJob research/llm-70b"))
@click.argument("kind")
@click.argument("ref", metavar="NAMESPACE/NAME")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many of its newest audit records to show.")
@click.pass_obj
def describe(client: Client, kind: str, ref: str, limit: int) -> None:
    """Who owns a workload, what it is charged, where it waits and why, and its last changes.

    KIND is the kind or its resource, in any case (PyTorchJob, pytorchjobs).
    """
    namespace, _, name = ref.partition("/")
    if not namespace or not name or "/" in name:
        raise click.BadParameter(f"{ref!r} is not NAMESPACE/NAME", param_hint="NAMESPACE/NAME")
    path = "/".join(quote(part, safe="") for part in ("", "workloads", kind, namespace, name))
    data = client.get(path, limit=limit)
    client.show(data, describe_text(data))


def describe_text(w: dict[str, Any]) -> str:
    """`kubectl describe`-like text of `GET /api/v1/workloads/{kind}/{namespace}/{name}`."""
    from gateway.cli.render import history_text

    waiting = w.get("queue")
    team = f"team {w['team']}" if w["team"] else "no team"
    if waiting:
        charges = (f"none while it waits; {waiting['gpus']} GPUs in {waiting['pods']} GPU pods once released, "
                   f"to {w['owner'] or 'nobody recorded'} ({team})")
    elif w["charged"]:
        charges = f"{w['gpus']} GPUs in {w['pods']} GPU pods, to {w['owner'] or 'nobody recorded'} ({team})"
    else:
        charges = (f"none of its own ({w['gpus']} GPUs recorded; what a controller made is charged with the "
                   "workload it was made from, a CronJob with each Job it makes)")
    resource = f" ({w['resource']})" if "." in w["resource"] and w["resource"] != w["kind"] else ""
    lines = [
        f"Name:     {w['namespace']}/{w['name']}",
        f"Kind:     {w['kind']}{resource}",
        f"Owner:    {w['owner'] or '(none recorded)'}",
        f"Team:     {w['team'] or '-'}",
        f"State:    {w['state']} since {_since(w['since'])} UTC",
        f"Charges:  {charges}",
    ]
    if waiting:
        lines.append(f"Queue:    position {waiting['position']}, waited {waiting['waited_s']:.0f}s: "
                     f"{waiting['reason']}")
    history = w.get("history") or []
    lines.append("History:" + ("" if history else "  no audit records you may read"))
    lines += [f"  {line}" for line in history_text(history).splitlines()] if history else []
    return "\n".join(lines)


#: The commands `gpuctl` adds from this module.
COMMANDS: tuple[click.Command, ...] = (workloads, queue, describe)
