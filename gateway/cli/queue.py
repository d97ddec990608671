"""`gpu-gateway queue`: the waiting workloads, in queue order, with why they wait."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import examples, gateway_error, open_store
from gateway.cli.options import store_source
from gateway.scheduling.holdings import queue_items


def queue_table(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no workloads waiting"
    heads = ("POS", "WORKLOAD", "OWNER", "TEAM", "GPUS", "PODS", "PRIO", "WAITED", "REASON")
    rows = [(str(i["position"]), f"{i['resource']} {i['namespace']}/{i['name']}", i["owner"], i["team"] or "-",
             str(i["gpus"]), str(i["pods"]), str(i["priority"]), f"{i['waited_s']:.0f}s", i["reason"]) for i in items]
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(heads[:-1])]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    return "\n".join([fmt.format(*heads), *(fmt.format(*r) for r in rows)])


@click.command("queue", epilog=examples("gpu-gateway queue --state ./gpu-gateway.db",
                                        "gpu-gateway queue --database-url postgresql://gw@db:5432/gpu_gateway -o json"))
@store_source
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def queue(state: Path | None, database_url: str | None, output: str) -> None:
    """Workloads waiting in the GPU queue: position, owner, GPUs, pods and why they wait.

    With -o json: {"items": [{"position", "resource", "namespace", "name", "owner", "team",
    "role", "gpus", "pods", "priority", "priority_class", "queued_at", "waited_s", "reason"}]}.
    """
    from gateway.errors import GatewayError

    try:
        items = queue_items(open_store(state, database_url).queue_rows(), time.time())
    except GatewayError as exc:
        raise gateway_error(exc) from exc
    if output == "json":
        click.echo(json.dumps({"items": items}, sort_keys=True))
    else:
        click.echo(queue_table(items))
