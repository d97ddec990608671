"""Wire settings into a running server: policy holder, store, service, ASGI app, uvicorn."""

from __future__ import annotations

import gc
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.api import api_routes
from gateway.api.context import ApiContext
from gateway.audit.history import keyed_digest
from gateway.audit.signing.checkpointer import build_checkpointer
from gateway.audit.signing.history_key import load_history_key
from gateway.auth import build_authenticator
from gateway.auth.serviceaccount import build_agent_authenticator
from gateway.config import Settings, StoreSettings
from gateway.logs import setup_logging
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder, default_policy_dir
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore
from gateway.webhook.app import create_app
from gateway.webhook.tls import ensure_self_signed

if TYPE_CHECKING:
    from gateway.store.postgres import PostgresStore

log = logging.getLogger("gateway")


@dataclass
class Gateway:
    service: AdmissionService
    app: Any


def open_store(settings: StoreSettings) -> SQLiteStore | PostgresStore:
    """The PostgreSQL store shared by replicas when a database URL is set, else the SQLite file."""
    if settings.database_url is not None:
        from gateway.store.postgres import PostgresStore

        return PostgresStore(settings.database_url)
    return SQLiteStore(settings.path, synchronous=settings.synchronous)


def build_gateway(settings: Settings) -> Gateway:
    authenticator = build_authenticator(settings.auth)  # first: a bad secret file fails before the store opens
    agent_authenticator = build_agent_authenticator(settings.agent_auth, settings.auth)
    directory = settings.policy.directory or default_policy_dir()
    policies = PolicyHolder(directory)
    store = open_store(settings.store)
    store.start_checkpoints()
    metrics = Metrics()
    metrics.watch_team_gpus(store.gpus_by_team)
    metrics.watch_queue(store.queue_rows)
    digest = keyed_digest(load_history_key(settings.store.path))
    service = AdmissionService(policies, store, failure_mode=settings.failure_mode, metrics=metrics,
                               digest=digest, gateway_user=settings.scheduler.service_account,
                               await_listing=settings.scheduler.await_listing)
    api = api_routes(ApiContext(authenticator, lambda: service.policies.policy, store, service.runtime,
                                metrics=metrics, agent_authenticator=agent_authenticator,
                                telemetry=lambda: service.policies.telemetry))
    app = create_app(service, max_body_bytes=settings.server.max_body_bytes,
                     reload_interval_s=settings.policy.reload_interval_s, api=api,
                     decision_budget_s=settings.server.decision_budget_ms / 1000,
                     offload_store=settings.store.database_url is not None)
    return Gateway(service, app)


#: Young objects the cyclic collector lets gather before a pass (CPython's default: 700). A
#: decision makes a few hundred containers that reference counting frees; at 700 a pass ran
#: every dozen admissions.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once started, before serving: what is loaded (modules, the policy, the app) is moved out of
    the cyclic collector's sight (`gc.freeze`), so that no later pass walks it again, and passes
    over young objects come less often. The collector still runs; only the server process does this.
    A frozen object let go later (the first policy, after a reload) is freed by its reference
    count; one held in a cycle stays, which bounds what can stay to the start-up heap."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run_server(settings: Settings, *, log_level: str = "INFO") -> None:
    import uvicorn

    from gateway.webhook.shutdown import DrainingServer

    setup_logging(log_level)
    gateway = build_gateway(settings)
    server = settings.server
    ssl: dict[str, Any] = {}
    if not server.insecure_http:
        cert, key = server.cert_file, server.key_file
        if cert is None or key is None:
            tls_dir = settings.store.path.resolve().parent / "tls"
            cert, key = ensure_self_signed(tls_dir, [server.host, "localhost", "127.0.0.1"])
            log.info("using self-signed TLS certificate %s", cert)
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}

    def on_sighup(*_: Any) -> None:
        result = gateway.service.policies.reload(force=True)
        if result.error:
            gateway.service.reload_failed(result.error)

    def on_stopped(signum: int, *_: Any) -> None:
        # uvicorn drains in-flight requests first, then hands the signal on to us: exit 0.
        log.info("stopped by signal %d after a graceful shutdown", signum)

    signal.signal(signal.SIGHUP, on_sighup)
    signal.signal(signal.SIGTERM, on_stopped)
    log.info("gpu-gateway listening on %s://%s:%d (policy %s, state %s)",
             "http" if server.insecure_http else "https", server.host, server.port,
             gateway.service.policies.policy.version, settings.store.path)
    checkpointer = build_checkpointer(settings.checkpoints, gateway.service.store)
    if checkpointer is not None:
        gateway.service.metrics.watch_checkpoints(checkpointer)
        checkpointer.start()
    controller = None
    if settings.scheduler.controller:  # the queue controller beside the webhook (docs/scheduler.md)
        from gateway.scheduling.controller.run import start_controller

        controller = start_controller(settings.scheduler, gateway.service)
    try:
        config = uvicorn.Config(gateway.app, host=server.host, port=server.port, log_config=None,
                                access_log=False, log_level=log_level.lower(), timeout_graceful_shutdown=10, **ssl)
        settle_heap()
        DrainingServer(config, gateway.service, server.shutdown_delay_s).run()
    finally:
        if checkpointer is not None:  # after the drain: the final checkpoint covers every answered request
            checkpointer.stop()
        if controller is not None:
            controller.stop()
