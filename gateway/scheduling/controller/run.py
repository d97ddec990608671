"""Starting the controller: inside `serve` (a thread beside the webhook) or as `gpu-gateway controller`."""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.config import SchedulerSettings
from gateway.kube import Cluster, api_client
from gateway.policy_bundle import PolicyHolder
from gateway.scheduling.controller.loop import Controller, ControllerSettings
from gateway.scheduling.ports import ControllerStore

log = logging.getLogger("gateway.controller")


def build_controller(scheduler: SchedulerSettings, store: ControllerStore, policies: PolicyHolder,
                     registry: CollectorRegistry | None,
                     settings: ControllerSettings | None = None) -> Controller:
    kubeconfig = str(scheduler.kubeconfig) if scheduler.kubeconfig else None
    cluster = Cluster(api_client(kubeconfig))
    settings = settings or ControllerSettings(identity=scheduler.service_account)
    return Controller(cluster, store, policies, settings, registry=registry)


def start_controller(scheduler: SchedulerSettings, service: Any) -> Controller:
    """The controller in a daemon thread, sharing the service's store, policy and /metrics."""
    controller = build_controller(scheduler, service.store, service.policies, service.metrics.registry)
    threading.Thread(target=controller.run, name="gpu-gateway-controller", daemon=True).start()
    log.info("queue controller started (lease %s/%s)", controller.settings.lease_namespace,
             controller.settings.lease_name)
    return controller
