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


def controller_settings(scheduler: SchedulerSettings) -> ControllerSettings:
    """The loop's settings from the command line's (the same flags for `controller` and `serve`)."""
    return ControllerSettings(identity=scheduler.service_account, lease_namespace=scheduler.lease_namespace,
                              lease_name=scheduler.lease_name, interval_s=scheduler.interval_s,
                              webhooks=scheduler.webhooks, webhook_generation=scheduler.webhook_generation,
                              forget_grace_s=scheduler.forget_grace_s)


def build_controller(scheduler: SchedulerSettings, store: ControllerStore, policies: PolicyHolder,
                     registry: CollectorRegistry | None) -> Controller:
    kubeconfig = str(scheduler.kubeconfig) if scheduler.kubeconfig else None
    cluster = Cluster(api_client(kubeconfig))
    return Controller(cluster, store, policies, controller_settings(scheduler), registry=registry)


def start_controller(scheduler: SchedulerSettings, service: Any) -> Controller:
    """The controller in a daemon thread, sharing the service's store, policy and /metrics."""
    controller = build_controller(scheduler, service.store, service.policies, service.metrics.registry)
    threading.Thread(target=controller.run, name="gpu-gateway-controller", daemon=True).start()
    log.info("queue controller started (lease %s/%s)", controller.settings.lease_namespace,
             controller.settings.lease_name)
    return controller
