"""GPU telemetry in the store: samples, measured GPU-hours, and alerts in the audit chain.

`TelemetrySQL` is mixed into both backends, which supply `_read` and `_write` (one
transaction under the backend's write lock). One report is one transaction: its samples,
the pods' shares of GPU time, the per-GPU and per-pod state, and an audit record (action
`alert`) for every alert the pure core raises (gateway.telemetry.alerts). A sample already
stored (same node, GPU and time: an agent resending after an outage) is skipped, so resending
is harmless. See docs/agent.md.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from gateway.admission.ports import Actor
from gateway.store.migrations import Migration, Subject, statements
from gateway.store.sql import Ledger
from gateway.telemetry.alerts import COLLAPSE, Alert, GpuState, PodUtil, collapse, evaluate_gpu
from gateway.telemetry.attribution import Owner, attribute, holders
from gateway.telemetry.ports import IngestResult
from gateway.telemetry.samples import GpuSample, PodRef
from gateway.telemetry.settings import TelemetrySettings
from gateway.telemetry.workload_names import name_prefixes, workload_of

#: What the node agents report, what it is attributed to, and the alerts' state.
TELEMETRY_SCHEMA = Subject("telemetry", (
    Migration(1, statements("""
CREATE TABLE IF NOT EXISTS gpu_samples (
    node            TEXT NOT NULL,
    gpu_uuid        TEXT NOT NULL,
    ts              {float} NOT NULL,
    gpu_index       INTEGER NOT NULL,
    interval_s      {float} NOT NULL,
    utilization     {float},
    memory_used     BIGINT,
    memory_total    BIGINT,
    power_w         {float},
    temperature_c   {float},
    ecc_corrected   BIGINT,
    ecc_uncorrected BIGINT,
    xid_errors      TEXT NOT NULL,
    processes       TEXT NOT NULL,
    error           TEXT NOT NULL,
    received_at     {float} NOT NULL,
    PRIMARY KEY (node, gpu_uuid, ts)
);
CREATE INDEX IF NOT EXISTS gpu_samples_ts ON gpu_samples (ts);
CREATE TABLE IF NOT EXISTS gpu_usage (
    node         TEXT NOT NULL,
    gpu_uuid     TEXT NOT NULL,
    ts           {float} NOT NULL,
    namespace    TEXT NOT NULL,
    pod          TEXT NOT NULL,
    workload     TEXT NOT NULL,
    owner        TEXT NOT NULL,
    team         TEXT NOT NULL,
    gpu_seconds  {float} NOT NULL,
    busy_seconds {float} NOT NULL,
    PRIMARY KEY (node, gpu_uuid, ts, namespace, pod)
);
CREATE INDEX IF NOT EXISTS gpu_usage_ts ON gpu_usage (ts);
CREATE TABLE IF NOT EXISTS gpu_state (
    gpu_uuid TEXT PRIMARY KEY,
    node     TEXT NOT NULL,
    state    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pod_utilization (
    namespace TEXT NOT NULL,
    pod       TEXT NOT NULL,
    workload  TEXT NOT NULL,
    previous  {float},
    current   {float} NOT NULL,
    ts        {float} NOT NULL,
    PRIMARY KEY (namespace, pod)
);
CREATE INDEX IF NOT EXISTS pod_utilization_workload ON pod_utilization (workload);
CREATE TABLE IF NOT EXISTS workload_alerts (
    workload  TEXT PRIMARY KEY,
    collapsed INTEGER NOT NULL
);
""")),
))

_T = TypeVar("_T")

#: Usage rows of GPU time no admitted pod holds (rogue processes) are counted under this workload.
UNADMITTED = "(unadmitted)"


def _owners(ledger: Ledger, samples: Sequence[GpuSample]) -> dict[PodRef, Owner | None]:
    """The ledger's owner of every pod the samples name, and the workload each belongs to."""
    pods: set[PodRef] = set()
    for s in samples:
        pods.update(holders(s))
        pods.update(p.pod for p in s.processes if p.pod is not None)
    out: dict[PodRef, Owner | None] = {}
    for pod in pods:
        row = ledger.db.one("SELECT owner, team FROM reservations WHERE resource = 'pods' AND namespace = ? "
                            "AND name = ?", (pod.namespace, pod.name))
        if row is None:
            out[pod] = None
            continue
        names = name_prefixes(pod.name)
        candidates = [(r["resource"], r["namespace"], r["name"]) for r in ledger.db.all(
            f"SELECT resource, namespace, name FROM reservations WHERE namespace = ? AND name IN "
            f"({', '.join('?' for _ in names)}) AND resource != 'pods'", (pod.namespace, *names))] if names else []
        workload = workload_of(pod, candidates) or f"pods {pod}"
        out[pod] = Owner(str(row["owner"]), str(row["team"]), workload)
    return out


def _state(raw: str | None) -> GpuState | None:
    if raw is None:
        return None
    data = json.loads(raw)
    data["rogue_pids"] = tuple(data.get("rogue_pids", ()))
    return GpuState(**data)


def alert_record(alert: Alert, reporter: Actor, policy_version: str) -> dict[str, Any]:
    """The audit fields of an alert: rule = the alert kind, decision `alert`."""
    owner = alert.owner
    target_kind, namespace, name = ("Pod", alert.pod.namespace, alert.pod.name) if alert.pod else ("GPU", "", "")
    if alert.kind == COLLAPSE and owner is not None:
        target_kind, _, ref = owner.workload.partition(" ")
        namespace, _, name = ref.partition("/")
    if not name:
        name = alert.gpu
    changes = [{"field": k, "change": "observed", "new": v} for k, v in sorted(alert.details.items())]
    changes.append({"field": "node", "change": "observed", "new": alert.node})
    return {
        "request_uid": "telemetry-" + secrets.token_hex(8), "user": reporter.user,
        "groups": json.dumps(list(reporter.groups)), "role": reporter.role, "action": "alert",
        "kind": target_kind, "namespace": namespace, "name": name, "object_uid": alert.gpu,
        "gpus": 1 if alert.kind != COLLAPSE else int(alert.details.get("pods", 0)),
        "decision": "alert", "mode": "enforce", "rule": alert.kind, "reason": alert.reason,
        "policy_version": policy_version, "owner": owner.owner if owner else "", "team": owner.team if owner else "",
        "changes": json.dumps(changes, sort_keys=True, default=str),
    }


def _store_sample(ledger: Ledger, s: GpuSample, shares: list[Any], now: float) -> bool:
    """Insert one sample and its shares; False when it was already stored."""
    if ledger.db.one("SELECT 1 AS x FROM gpu_samples WHERE node = ? AND gpu_uuid = ? AND ts = ?",
                     (s.node, s.uuid, s.ts)) is not None:
        return False
    processes = [{"pid": p.pid, "used_memory_bytes": p.used_memory_bytes, "pod_uid": p.pod_uid,
                  "container_id": p.container_id, "pod": str(p.pod) if p.pod else ""} for p in s.processes]
    ledger.db.run(
        "INSERT INTO gpu_samples (node, gpu_uuid, ts, gpu_index, interval_s, utilization, memory_used, memory_total, "
        "power_w, temperature_c, ecc_corrected, ecc_uncorrected, xid_errors, processes, error, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (s.node, s.uuid, s.ts, s.index, s.interval_s, s.utilization, s.memory_used_bytes, s.memory_total_bytes,
         s.power_w, s.temperature_c, s.ecc_corrected, s.ecc_uncorrected, json.dumps(list(s.xid_errors)),
         json.dumps(processes), s.error, now))
    busy = (s.utilization or 0.0) / 100.0
    rows = [(sh.pod.namespace, sh.pod.name, sh.owner.workload if sh.owner else UNADMITTED,
             sh.owner.owner if sh.owner else "", sh.owner.team if sh.owner else "", sh.fraction) for sh in shares]
    if not rows and any(p.pod is None for p in s.processes):  # GPU time of processes outside any pod
        rows = [("", "", UNADMITTED, "", "", 1.0)]
    for namespace, pod, workload, owner, team, fraction in rows:
        seconds = s.interval_s * fraction
        ledger.db.run(
            "INSERT INTO gpu_usage (node, gpu_uuid, ts, namespace, pod, workload, owner, team, gpu_seconds, "
            "busy_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (s.node, s.uuid, s.ts, namespace, pod, workload, owner, team, seconds, seconds * busy))
    return True


def _update_pod(ledger: Ledger, pod: PodRef, workload: str, current: float, ts: float) -> None:
    row = ledger.db.one("SELECT current, ts FROM pod_utilization WHERE namespace = ? AND pod = ?",
                        (pod.namespace, pod.name))
    if row is None:
        ledger.db.run("INSERT INTO pod_utilization (namespace, pod, workload, previous, current, ts) "
                      "VALUES (?, ?, ?, NULL, ?, ?)", (pod.namespace, pod.name, workload, current, ts))
    elif ts > float(row["ts"]):
        ledger.db.run("UPDATE pod_utilization SET previous = ?, current = ?, ts = ?, workload = ? "
                      "WHERE namespace = ? AND pod = ?",
                      (row["current"], current, ts, workload, pod.namespace, pod.name))


def _judge(ledger: Ledger, workload: str, owner: Owner, nodes: dict[PodRef, str],
           settings: TelemetrySettings) -> Alert | None:
    """A collapse alert for the workload if its pods just collapsed (once, until they recover)."""
    rows = ledger.db.all("SELECT namespace, pod, previous, current, ts FROM pod_utilization WHERE workload = ?",
                         (workload,))
    pods = [PodUtil(PodRef(r["namespace"], r["pod"]), None if r["previous"] is None else float(r["previous"]),
                    float(r["current"]), float(r["ts"])) for r in rows]
    latest = max(p.ts for p in pods)
    collapsed, recovered, fell, counted = collapse(pods, settings, latest)
    flag = ledger.db.one("SELECT collapsed FROM workload_alerts WHERE workload = ?", (workload,))
    was = bool(flag and flag["collapsed"])
    alert = None
    if collapsed and not was:
        alert = Alert(
            COLLAPSE, ",".join(sorted({nodes.get(p.pod, "") for p in pods} - {""})) or "-", "-",
            f"{workload} (owner {owner.owner}): utilisation of {fell} of its {counted} reporting pods fell "
            f"from {settings.collapse_from_pct:g}% or more to {settings.collapse_to_pct:g}% or less at once "
            "(crash, hang, kill or sabotage?)", latest, owner=owner, details={"pods": counted, "fell": fell})
        was = True
    elif was and recovered:
        was = False
    ledger.db.run("INSERT INTO workload_alerts (workload, collapsed) VALUES (?, ?) "
                  "ON CONFLICT (workload) DO UPDATE SET collapsed = excluded.collapsed", (workload, int(was)))
    return alert


def _pod_utilization(ledger: Ledger, samples: Sequence[GpuSample], owners: dict[PodRef, Owner | None],
                     settings: TelemetrySettings, now: float) -> list[Alert]:
    """Update each admitted pod's utilisation (mean over its GPUs per sample time) and judge the
    workloads they belong to for a collapse."""
    by_time: dict[float, dict[PodRef, list[float]]] = {}
    nodes: dict[PodRef, str] = {}
    for s in samples:
        if s.utilization is None:
            continue
        for pod in holders(s):
            if owners.get(pod) is not None:
                by_time.setdefault(s.ts, {}).setdefault(pod, []).append(s.utilization)
                nodes[pod] = s.node
    alerts: list[Alert] = []
    # In time order, judging after each instant, so that a report holding the minutes before
    # and after a collapse (sent after an outage) still shows the fall.
    for ts, pods in sorted(by_time.items()):
        touched: dict[str, Owner] = {}
        for pod, values in pods.items():
            owner = owners[pod]
            assert owner is not None
            _update_pod(ledger, pod, owner.workload, sum(values) / len(values), ts)
            touched[owner.workload] = owner
        for workload, owner in sorted(touched.items()):
            alert = _judge(ledger, workload, owner, nodes, settings)
            if alert is not None:
                alerts.append(alert)
    return alerts


def ingest(ledger: Ledger, samples: Sequence[GpuSample], *, reporter: Actor, settings: TelemetrySettings,
           exempt_namespaces: frozenset[str], policy_version: str, now: float) -> IngestResult:
    """Store a report's samples and write the alerts they raise, in the caller's transaction."""
    result = IngestResult()
    owners = _owners(ledger, samples)
    fresh: list[GpuSample] = []
    for s in sorted(samples, key=lambda x: x.ts):
        if not _store_sample(ledger, s, attribute(s, owners), now):
            result.duplicates += 1
            continue
        result.accepted += 1
        fresh.append(s)
        row = ledger.db.one("SELECT state FROM gpu_state WHERE gpu_uuid = ?", (s.uuid,))
        prev = _state(row["state"] if row else None)
        state, alerts = evaluate_gpu(prev, s, owners, settings, exempt_namespaces)
        if state is not prev:
            ledger.db.run("INSERT INTO gpu_state (gpu_uuid, node, state) VALUES (?, ?, ?) ON CONFLICT (gpu_uuid) "
                          "DO UPDATE SET node = excluded.node, state = excluded.state",
                          (s.uuid, s.node, json.dumps(asdict(state))))
        result.alerts += alerts
    result.alerts += _pod_utilization(ledger, fresh, owners, settings, now)
    for alert in result.alerts:
        ledger.append_audit(alert_record(alert, reporter, policy_version), now=now, dry_run=False)
    return result


def measured_usage(ledger: Ledger, since: float, until: float) -> dict[str, dict[str, dict[str, Any]]]:
    """Measured GPU-hours and mean utilisation (%) per `users`, `teams` and `workloads` in [since, until)."""
    out: dict[str, dict[str, dict[str, Any]]] = {"users": {}, "teams": {}, "workloads": {}}
    for scope, column in (("users", "owner"), ("teams", "team"), ("workloads", "workload")):
        extra = ", MIN(owner) AS owner, MIN(team) AS team" if scope == "workloads" else ""
        rows = ledger.db.all(
            f"SELECT {column} AS name, SUM(gpu_seconds) AS gpu_s, SUM(busy_seconds) AS busy_s{extra} "
            f"FROM gpu_usage WHERE ts >= ? AND ts < ? AND {column} != '' GROUP BY {column}", (since, until))
        for r in rows:
            gpu_s = float(r["gpu_s"] or 0.0)
            entry: dict[str, Any] = {
                "gpu_hours": round(gpu_s / 3600, 6),
                "mean_utilization": round(100 * float(r["busy_s"] or 0.0) / gpu_s, 2) if gpu_s else None,
            }
            if scope == "workloads":
                entry.update(owner=r["owner"], team=r["team"])
            out[scope][str(r["name"])] = entry
    return out


class TelemetrySQL:
    """GPU telemetry over the backend's `_read` and `_write` (see the module docstring)."""

    _read: Callable[..., Any]
    _write: Callable[..., Any]

    def ingest_telemetry(self, samples: Sequence[GpuSample], *, reporter: Actor, settings: TelemetrySettings,
                         exempt_namespaces: frozenset[str], policy_version: str, now: float) -> IngestResult:
        [result] = self.ingest_telemetry_many([(samples, reporter)], settings=settings,
                                              exempt_namespaces=exempt_namespaces, policy_version=policy_version,
                                              now=now)
        return result

    def ingest_telemetry_many(self, reports: Sequence[tuple[Sequence[GpuSample], Actor]], *,
                              settings: TelemetrySettings, exempt_namespaces: frozenset[str], policy_version: str,
                              now: float) -> list[IngestResult]:
        """Several reports in one transaction (one disk sync: the API's group commit), in order."""
        results: list[IngestResult] = self._write(lambda ledger: [ingest(
            ledger, samples, reporter=reporter, settings=settings, exempt_namespaces=exempt_namespaces,
            policy_version=policy_version, now=now) for samples, reporter in reports])
        return results

    def measured_usage(self, since: float, until: float) -> dict[str, dict[str, dict[str, Any]]]:
        usage: dict[str, dict[str, dict[str, Any]]] = self._read(lambda ledger: measured_usage(ledger, since, until))
        return usage

    def telemetry_samples(self, node: str | None = None) -> list[dict[str, Any]]:
        """Stored samples, oldest first (for tests and operators' queries)."""
        def read(ledger: Ledger) -> list[dict[str, Any]]:
            sql = "SELECT * FROM gpu_samples" + (" WHERE node = ?" if node else "") + " ORDER BY ts, node, gpu_uuid"
            return [dict(r) for r in ledger.db.all(sql, (node,) if node else ())]
        rows: list[dict[str, Any]] = self._read(read)
        return rows

    def record_eviction(self, fields: dict[str, Any], *, now: float) -> None:
        """The audit record of a rogue pod's eviction (or of its failure)."""
        self._write(lambda ledger: ledger.append_audit(fields, now=now, dry_run=False))
