"""`gpu-gateway controller`: the queue controller as its own process (gateway.scheduling.controller)."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import examples, gateway_error
from gateway.cli.options import scheduler_options
from gateway.config import SchedulerSettings


@click.command("controller", epilog=examples(
    "gpu-gateway controller --database-url postgresql://gw@db:5432/gpu_gateway --watch-webhook validating/gpu-gateway",
    "gpu-gateway controller --state ./gpu-gateway.db --kubeconfig ~/.kube/config --once"))
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), help="SQLite state file.")
@click.option("--database-url", metavar="URL", envvar="GPU_GATEWAY_DATABASE_URL",
              help="PostgreSQL database (instead of --state; also from GPU_GATEWAY_DATABASE_URL).")
@click.option("--policy-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Policy bundle; default: the bundled policies/.")
@click.option("--metrics-port", type=int, default=9090, show_default=True, help="Serve /metrics here (0: off).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True)
@click.option("--once", is_flag=True, help="Run one pass (if this replica gets the Lease) and exit.")
@click.option("--log-level", default="INFO", show_default=True)
@scheduler_options(with_controller_flag=False)
def controller(state: Path | None, database_url: str | None, policy_dir: Path | None, metrics_port: int,
               metrics_host: str, once: bool, log_level: str, scheduler: SchedulerSettings) -> None:
    """Run the queue controller: rebuild the ledger from the cluster, release whole gangs, report waits.

    One replica is active at a time (a coordination.k8s.io Lease); the others wait to take over.
    """
    import signal

    from prometheus_client import start_http_server

    from gateway.config import StoreSettings
    from gateway.errors import GatewayError
    from gateway.logs import setup_logging
    from gateway.metrics import Metrics
    from gateway.policy_bundle import PolicyHolder, default_policy_dir
    from gateway.scheduling.controller.run import build_controller
    from gateway.server import open_store

    setup_logging(log_level.upper())
    if (state is None) == (database_url is None):
        raise click.UsageError("give exactly one of --state PATH and --database-url URL")
    try:
        store = open_store(StoreSettings(path=state or Path("gpu-gateway.db"), database_url=database_url))
        policies = PolicyHolder(policy_dir or default_policy_dir())
        metrics = Metrics()
        metrics.watch_team_gpus(store.gpus_by_team)
        metrics.watch_queue(store.queue_rows)
        ctl = build_controller(scheduler, store, policies, metrics.registry)
        if once:
            result = ctl.run_once()
            click.echo("not the leader: another replica holds the lease" if result is None else
                       f"released {len(result.plan.released)}, waiting {len(result.plan.held)}, "
                       f"dropped {len(result.dropped)}")
            return
        if metrics_port:
            start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
        signal.signal(signal.SIGTERM, lambda *_: ctl.stop())
        ctl.run()
    except GatewayError as exc:
        raise gateway_error(exc) from exc
