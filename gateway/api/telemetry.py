"""POST /api/v1/telemetry: GPU samples from the node agents (docs/agent.md).

The caller must hold a role with the `report` permission (policies/policy.csv binds the
agents' service account and group to role `agent`). Besides admin API tokens, this endpoint
alone accepts the agents' projected service-account tokens (`serve --agent-token-issuer`).
A report is stored in one transaction with the alerts it raises; the answer says how many
samples were new and how many were resent duplicates, so an agent may resend whatever it is
unsure of.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.admission.identity import Identity
from gateway.admission.ports import Actor
from gateway.api.context import ApiContext, error, json_body
from gateway.errors import GatewayError
from gateway.telemetry.alerts import Alert
from gateway.telemetry.eviction.evictor import Evictor, KubernetesEvictor
from gateway.telemetry.ports import IngestResult
from gateway.telemetry.report import TelemetryError, parse_report
from gateway.telemetry.samples import GpuSample
from gateway.times import with_time

log = logging.getLogger("gateway.telemetry")

MAX_BODY_BYTES = 16 * 1024 * 1024


def _alert_json(alert: Alert) -> dict[str, Any]:
    return with_time({"kind": alert.kind, "node": alert.node, "gpu": alert.gpu, "reason": alert.reason,
                      "ts": alert.ts, "pod": str(alert.pod) if alert.pod else None,
                      "owner": alert.owner.owner if alert.owner else None,
                      "workload": alert.owner.workload if alert.owner else None})


def _eviction_record(alert: Alert, outcome: str, ok: bool, policy_version: str) -> dict[str, Any]:
    assert alert.pod is not None
    return {
        "request_uid": f"evict-{alert.node}-{alert.pid}-{int(alert.ts)}", "user": "gpu-gateway", "groups": "[]",
        "role": "system", "action": "kill", "kind": "Pod", "namespace": alert.pod.namespace,
        "name": alert.pod.name, "object_uid": alert.gpu, "gpus": 0, "decision": "allowed" if ok else "denied",
        "mode": "enforce", "rule": "rogue-eviction",
        "reason": f"{outcome}: process {alert.pid} on GPU {alert.gpu} of node {alert.node} belongs to no "
                  "admitted workload (limits.yaml telemetry.evict_rogue_pods)",
        "policy_version": policy_version, "owner": "", "team": "",
    }


class _GroupCommit:
    """Reports that arrive while a transaction is being written wait and go together in the
    next one: one disk sync for many agents (the store serialises writers anyway)."""

    def __init__(self, ctx: ApiContext, max_batch: int = 256) -> None:
        self.ctx, self.max_batch = ctx, max_batch
        self._pending: list[tuple[Sequence[GpuSample], Actor, asyncio.Future[IngestResult]]] = []
        self._draining = False

    async def submit(self, samples: Sequence[GpuSample], reporter: Actor) -> IngestResult:
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._pending.append((samples, reporter, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        store = self.ctx.store
        assert store is not None
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                policy, settings = self.ctx.policy(), self.ctx.telemetry()
                reports = [(samples, reporter) for samples, reporter, _ in batch]
                try:
                    results = await run_in_threadpool(
                        store.ingest_telemetry_many, reports, settings=settings,
                        exempt_namespaces=policy.exempt_namespaces, policy_version=policy.version, now=time.time())
                except Exception as exc:  # every waiting request gets the failure, none is left hanging
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = False


def telemetry_routes(ctx: ApiContext, evictor: Evictor | None = None) -> list[BaseRoute]:
    evict_with: Evictor = evictor or KubernetesEvictor()
    writer = _GroupCommit(ctx)

    async def report(request: Request) -> Response:
        identity = await ctx.identity(request, agent=True)
        if isinstance(identity, Response):
            return identity
        if not ctx.policy().may(identity.role, "report", "any"):
            return error(403, "forbidden", f"{identity.describe()} may not report GPU telemetry; bind the "
                                           "agent's identity to a role with `report` (policies/policy.csv)")
        if ctx.store is None:
            return error(503, "unavailable", "no store is attached to the admin API")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return error(413, "too_large", f"a report may be at most {MAX_BODY_BYTES} bytes")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return error(413, "too_large", f"a report may be at most {MAX_BODY_BYTES} bytes")
        try:
            samples = parse_report(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            return error(400, "bad_request", f"body is not JSON: {exc}")
        except TelemetryError as exc:
            return error(400, "bad_request", str(exc))
        return await _ingest(identity, samples)

    async def _ingest(identity: Identity, samples: Sequence[GpuSample]) -> Response:
        policy, settings = ctx.policy(), ctx.telemetry()
        reporter = Actor(identity.user, identity.groups, identity.role or "")
        try:
            result = await writer.submit(samples, reporter)
        except GatewayError as exc:
            return error(503, "unavailable", f"cannot store the report: {exc}")
        if ctx.metrics is not None:
            ctx.metrics.telemetry_samples.inc(result.accepted)
            for alert in result.alerts:
                ctx.metrics.telemetry_alerts.labels(alert.kind).inc()
        for alert in result.alerts:
            log.warning("GPU alert %s: %s", alert.kind, alert.reason)
            if alert.evict and settings.evict_rogue_pods and alert.pod is not None:
                await _evict(alert, policy.version)
        return json_body({"accepted": result.accepted, "duplicates": result.duplicates,
                          "alerts": [_alert_json(a) for a in result.alerts]})

    async def _evict(alert: Alert, policy_version: str) -> None:
        assert alert.pod is not None and ctx.store is not None
        pod, store = alert.pod, ctx.store
        try:
            outcome, ok = await run_in_threadpool(evict_with.evict, pod.namespace, pod.name), True
        except RuntimeError as exc:
            outcome, ok = str(exc), False
        if ctx.metrics is not None:
            ctx.metrics.evictions.labels("evicted" if ok else "failed").inc()
        try:
            await run_in_threadpool(lambda: store.record_eviction(
                _eviction_record(alert, outcome, ok, policy_version), now=time.time()))
        except GatewayError as exc:
            log.error("could not audit the eviction of pod %s: %s", pod, exc)

    return [Route("/telemetry", report, methods=["POST"])]


def scoped_measured(measured: dict[str, dict[str, dict[str, Any]]], identity: Identity,
                    scope: str | None) -> dict[str, dict[str, dict[str, Any]]]:
    """What of the measured usage the caller may read, scoped like the audit (`audit-read`)."""
    if scope == "any":
        return measured

    def visible(name: str, entry: dict[str, Any], kind: str) -> bool:
        owner, team = (entry.get("owner"), entry.get("team")) if kind == "workloads" else (
            (name, None) if kind == "users" else (None, name))
        return owner == identity.user or (scope in ("team", "team-shared") and team in identity.teams)

    return {kind: {n: e for n, e in values.items() if visible(n, e, kind)} for kind, values in measured.items()}
