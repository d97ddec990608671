"""The `serve` and `controller` flags of the scheduler shim, collected into one SchedulerSettings."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.config import SchedulerSettings

_OPTIONS = [
    click.option("--service-account", envvar="GPU_GATEWAY_SERVICE_ACCOUNT", show_envvar=True,
                 default=SchedulerSettings.service_account, show_default=True, metavar="USERNAME",
                 help="The gateway's own Kubernetes identity: the only one that may remove the "
                      "gpu-gateway.io/quota scheduling gate."),
    click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                 help="Cluster access for the controller (default: in-cluster, then $KUBECONFIG or ~/.kube/config)."),
]


def scheduler_options(*, with_controller_flag: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the flags and pass the command `scheduler=SchedulerSettings(...)`; with
    `with_controller_flag`, also `--controller` (run the controller inside `serve`)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, service_account: str, kubeconfig: Path | None, controller: bool = True,
                    **kwargs: Any) -> Any:
            settings = SchedulerSettings(service_account=service_account, controller=controller,
                                         kubeconfig=kubeconfig)
            return command(*args, scheduler=settings, **kwargs)

        for option in reversed(_OPTIONS):
            wrapper = option(wrapper)
        if with_controller_flag:
            wrapper = click.option("--controller", is_flag=True,
                                   help="Also run the queue controller (one active replica through a Lease; "
                                        "docs/scheduler.md).")(wrapper)
        return wrapper

    return decorate
