"""Admission as a service: body in, AdmissionReview response out.

Glue between the pure core, the policy holder and the store. The HTTP adapter calls
`mutate` and `validate`; the CLI's `check` calls the core directly.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.admission.admission import Plan, prepare
from gateway.admission.decision import Action, Decision
from gateway.admission.gates import gate_patch, guard, launch_budget, stamp_annotations
from gateway.admission.identity import Grant
from gateway.admission.mutation import ownership_patch
from gateway.admission.plan import StatedFacts
from gateway.admission.policy import Policy
from gateway.admission.review import AdmissionRequest, answer_version, parse_review, review_response, review_uid
from gateway.admission.scheduling_settings import GATEWAY_SERVICE_ACCOUNT
from gateway.admission.unblocked import asks_for_gpus
from gateway.audit.history import Digest, keyed_digest
from gateway.audit.records import RequestRecord
from gateway.config import FailureMode
from gateway.errors import GatewayError, ReviewError, StoreError
from gateway.logs import event, fields
from gateway.metrics import Metrics
from gateway.policy_alarm import report_reload_failure
from gateway.policy_bundle import PolicyHolder
from gateway.runtime import RuntimeSettings
from gateway.store.base import Store, decide_one
from gateway.store.types import Job
from gateway.store.writer import StoreWriter

log = logging.getLogger("gateway.decision")


@dataclass(frozen=True, slots=True)
class _Staged:
    plan: Plan
    job: Job


def admission_job(plan: Plan, policy: Policy, *, now: float, digest: Digest,
                  stated: StatedFacts | None = None, await_listing: bool = False) -> Job:
    """The store job that decides a prepared request: what the store reads for it and the
    audit record it writes. The what-if builds the same job, with what it `stated`.
    `await_listing`: a controller lists the workloads that predate the gateway (`AdmissionService`)."""
    req = plan.request
    return Job(
        key=plan.key or (req.resource_key, req.namespace, req.name),
        owner=plan.owner, team=plan.team,
        plan=plan, policy=policy,
        audit=RequestRecord(req, role=plan.identity.role or "", kind=plan.display_kind,
                            name=plan.key[2] if plan.key else req.name, policy_version=policy.version,
                            digest=digest, grant=plan.identity.grant or ""),
        dry_run=req.dry_run, now=now, request_uid=req.uid,
        reference_keys=plan.reference_keys,
        needs_usage=plan.action in (Action.LAUNCH, Action.MODIFY) and not plan.data_kind,
        referrers=bool(plan.data_kind) and plan.action is Action.LAUNCH and not plan.identity.is_actor,
        approval_key=(req.username, plan.action.value, req.namespace, plan.key[2] if plan.key else req.name)
        if plan.action is not None else None,
        budget=launch_budget(plan, policy, now),
        uids=plan.reach_uids,
        parent=(plan.parent.uid, (plan.parent.resource_key, req.namespace, plan.parent.name))
        if plan.parent is not None else None,
        roots=await_listing and req.sub_resource == "scale",
        stated=stated,
    )


class AdmissionService:
    def __init__(
        self,
        policies: PolicyHolder,
        store: Store,
        *,
        failure_mode: FailureMode = FailureMode.CLOSED,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        digest: Digest | None = None,
        gateway_user: str = GATEWAY_SERVICE_ACCOUNT,
        await_listing: bool = False,
    ) -> None:
        """`digest` hashes ConfigMap and Secret values in the audit log's changes; the server
        passes the installation's keyed digest. Without one, a key of this process is used,
        so digests compare only within its lifetime. `gateway_user` is the gateway's own
        identity, the only one that may remove the queue's scheduling gate. `await_listing`:
        a controller records the GPU workloads that predate the gateway (gateway/scheduling/roots.py);
        until it has listed a kind, a `/scale` of a workload of that kind the ledger does not
        hold is refused, since it may be one of them."""
        self.gateway_user = gateway_user
        self.await_listing = await_listing
        self.policies = policies
        self.store = store
        self.failure_mode = failure_mode
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.digest = digest or keyed_digest(secrets.token_bytes(32))
        self._grants: tuple[float, tuple[Grant, ...]] | None = None
        self.runtime = RuntimeSettings(policies, store, on_error=self.reload_failed)
        self.refresh_inline = True
        """Read the run-time settings and grants on the request path when stale. The server turns
        this off for PostgreSQL and calls `refresh` from a background thread instead, so that a
        slow database never stalls requests that need no ledger."""
        self.draining = False
        """Set on SIGTERM: /readyz fails so that new requests go to other replicas."""

    def reload_failed(self, error: str) -> None:
        """A policy or settings change was refused: count it and audit it (gateway.policy_alarm)."""
        report_reload_failure(self.store, self.metrics, self.policies, error)

    #: How long the live break-glass grants are cached: a new or revoked grant takes effect within it.
    GRANTS_TTL_S = 1.0

    def refresh(self) -> None:
        """Bring the run-time settings and the grant cache up to date (blocking store reads)."""
        now = self.clock()
        self.runtime.refresh(now)
        self.live_grants(now, read=True)

    def live_grants(self, now: float, *, read: bool | None = None) -> tuple[Grant, ...]:
        """The live break-glass grants, read from the store at most once per `GRANTS_TTL_S`.

        Reading them also marks (and audits) the grants and approvals that expired. A store that cannot be
        read leaves the last grants known in force until it can: no grant outlives its expiry,
        as `with_grants` is only given grants whose expiry is still ahead of the clock.
        """
        cached = self._grants
        if (self.refresh_inline if read is None else read) and (
                cached is None or not 0 <= now - cached[0] < self.GRANTS_TTL_S):
            try:
                self._grants = cached = (now, self.store.live_grants(now=now))
            except GatewayError as exc:
                log.warning("cannot read break-glass grants: %s", exc)
                self._grants = cached = (now, cached[1] if cached else ())
        return tuple(g for g in cached[1] if g.expires_at > now) if cached else ()

    # ------------------------------------------------------------- endpoints

    def mutate(self, body: Any) -> dict[str, Any]:
        """Stamp ownership on GPU launches. Side-effect free (safe on dry runs)."""
        try:
            req = parse_review(body)
        except ReviewError as exc:
            return self._unreadable(body, exc)
        if self.refresh_inline:
            self.runtime.refresh(self.clock())
        try:
            policy = self.policies.policy
            plan = prepare(req, policy)
            ops = ownership_patch(plan, stamp_annotations(plan, policy)) + gate_patch(plan, policy)
        except Exception:
            log.exception("mutate failed", extra=fields(uid=req.uid))
            self.metrics.errors.labels("internal").inc()
            # No stamp means the validating webhook records the owner itself; never block here
            # on our own bug, the validating half applies the failure policy.
            return review_response(req.uid, True, warnings=("gpu-gateway: could not stamp the owner",),
                                   api_version=req.api_version)
        if not ops:
            return review_response(req.uid, True, api_version=req.api_version)
        patch = base64.b64encode(orjson.dumps(ops)).decode()
        return review_response(req.uid, True, patch=patch, api_version=req.api_version)

    def validate(self, body: Any) -> dict[str, Any]:
        """Decide, and for governed actions reserve and audit in one transaction."""
        staged = self._stage(body)
        if not isinstance(staged, _Staged):
            return staged
        try:
            decision = decide_one(self.store, staged.job)
        except Exception as exc:
            return self._failed(staged.plan.request, exc)
        return self._answer(staged.plan, decision)

    async def validate_async(self, body: Any, writer: StoreWriter, *, deadline: float | None = None) -> dict[str, Any]:
        """`validate` for the event loop: the store work goes to the writer. With `deadline` (on
        the writer's clock), a request the store cannot decide by then gets the failure policy,
        and its transaction, if it comes later, is rolled back (docs/faults.md)."""
        staged = self._stage(body)
        if not isinstance(staged, _Staged):
            return staged
        try:
            decision = await writer.submit(staged.job, deadline=deadline)
        except Exception as exc:
            return self._failed(staged.plan.request, exc, gpus=asks_for_gpus(staged.plan))
        return self._answer(staged.plan, decision)

    def _stage(self, body: Any) -> _Staged | dict[str, Any]:
        """Parse and prepare; answer at once what needs no ledger, else the store job to run."""
        try:
            req = parse_review(body)
        except ReviewError as exc:
            return self._unreadable(body, exc)
        now = self.clock()
        if self.refresh_inline:
            self.runtime.refresh(now)
        policy = self.policies.policy
        try:
            plan = prepare(req, policy, self.live_grants(now))
            gate = guard(plan, policy, self.gateway_user)
        except Exception as exc:
            return self._failed(req, exc)
        if gate is not None:
            plan = replace(plan, early=gate)
        if plan.early is not None and not plan.early.audited:
            return self._answer(plan, plan.early)
        job = admission_job(plan, policy, now=now, digest=self.digest, await_listing=self.await_listing)
        return _Staged(plan, job)

    # ------------------------------------------------------------- answers

    def _answer(self, plan: Plan, decision: Decision) -> dict[str, Any]:
        req = plan.request
        if decision.action is not None and (decision.audited or decision.rule == "actor"):
            self.metrics.decisions.labels(decision.action.value, decision.verdict, decision.rule).inc()
            event(log, "decision",
                  uid=req.uid, user=req.username, role=plan.identity.role,
                  action=decision.action.value, kind=plan.display_kind, namespace=req.namespace,
                  object=plan.key[2] if plan.key else req.name, gpus=decision.gpus,
                  decision=decision.verdict, mode=decision.mode.value, rule=decision.rule,
                  dry_run=req.dry_run)
        message = decision.reason if not decision.allowed else ""
        return review_response(req.uid, decision.allowed, message=message, warnings=decision.warnings,
                               api_version=req.api_version)

    def _unreadable(self, body: Any, exc: ReviewError) -> dict[str, Any]:
        self.metrics.errors.labels("unreadable").inc()
        uid = review_uid(body)
        if uid is None:
            raise exc
        log.warning("unreadable review: %s", exc, extra=fields(uid=uid))
        return review_response(uid, False, code=400, message=f"gpu-gateway: cannot read the AdmissionReview: {exc}",
                               api_version=answer_version(body))

    def _failed(self, req: AdmissionRequest, exc: Exception, *, gpus: bool = True) -> dict[str, Any]:
        """The failure policy. A request that asks for no GPUs is never refused for a store fault."""
        kind = "store" if isinstance(exc, StoreError) else "internal"
        self.metrics.errors.labels(kind).inc()
        if kind == "store" and not gpus:
            log.warning("store unavailable; a request without GPUs let through unrecorded: %s", exc,
                        extra=fields(uid=req.uid, event="failure_policy"))
            return review_response(req.uid, True, warnings=(
                "gpu-gateway: the ledger is unavailable; this request asks for no GPUs and was let "
                "through without its ownership checks; it was not recorded",), api_version=req.api_version)
        if kind == "internal":
            log.error("failure policy %s applied after an internal error", self.failure_mode.value,
                      exc_info=exc, extra=fields(uid=req.uid, event="failure_policy"))
        else:
            log.error("failure policy %s applied: %s", self.failure_mode.value, exc,
                      extra=fields(uid=req.uid, event="failure_policy"))
        if self.failure_mode is FailureMode.OPEN:
            return review_response(req.uid, True, warnings=(
                "gpu-gateway: the gateway could not decide this request and let it through "
                "(failure mode open); it was not recorded",), api_version=req.api_version)
        return review_response(
            req.uid, False, code=500,
            message="gpu-gateway: the gateway could not decide this GPU request and refuses it "
                    "(failure mode closed); retry shortly or ask an administrator",
            api_version=req.api_version,
        )

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "shutting down"
        try:
            self.store.ping()
        except GatewayError as exc:
            return False, f"store unavailable: {exc}"
        if self.policies.last_error:
            return True, f"policy reload failing, last good in force: {self.policies.last_error}"
        if self.runtime.unreadable:
            return True, f"run-time settings unreadable, last read in force: {self.runtime.unreadable}"
        return True, "ok"
