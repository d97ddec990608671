"""Terminal rendering for the CLI: tables, object timelines and check results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from gateway.audit.records import is_break_glass
from gateway.cli.common import table

_COLUMNS = (("seq", "#"), ("time", "TIME"), ("user", "USER"), ("role", "ROLE"), ("action", "ACTION"),
            ("target", "TARGET"), ("gpus", "GPUS"), ("decision", "DECISION"), ("rule", "RULE"))
#: The columns `-o wide` adds to an audit table.
_WIDE_COLUMNS = (("owner", "OWNER"), ("team", "TEAM"), ("reason", "REASON"))

#: The kinds people know for the run-time settings the audit records as `Setting KIND/NAME`.
_SETTING_KINDS = {"binding": "RoleBinding", "quota": "Quota", "policy": "Policy", "webhook": "WebhookBaseline",
                  "roots": "WorkloadListing"}


def _time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def target_text(kind: str, namespace: str, name: str) -> str:
    """`KIND NAMESPACE/NAME`, `KIND NAME` without a namespace, and an administrative object by its
    own name: `Grant alice`, `Policy bundle`, `Quota team:vision`, `Approval Job research/llm`."""
    if kind in ("Setting", "Policy"):
        sub, sep, rest = name.partition("/")
        if sep and sub in _SETTING_KINDS:
            return f"{_SETTING_KINDS[sub]} {rest}"
    if kind == "Approval":  # recorded as Approval NAMESPACE KIND/NAME: an approval of that target
        target_kind, sep, target_name = name.partition("/")
        if sep:
            return f"Approval {target_text(target_kind, namespace, target_name)}"
    if not namespace:
        return f"{kind} {name}".strip()
    return f"{kind} {namespace}/{name}"


def audit_cells(r: dict[str, Any]) -> dict[str, str]:
    """One audit record as the cells of its table line (keys of `_COLUMNS` and `_WIDE_COLUMNS`)."""
    decision = r["decision"] + (" (dry run)" if r.get("dry_run") else "")
    if r.get("mode") in ("warn", "dry-run") and r["decision"] == "allowed" and r["rule"] not in (
        "role-limits", "ownership"
    ):
        decision += f" [{r['mode']}]"
    return {
        "seq": str(r["seq"]),
        "time": _time(r["ts"]),
        "user": r["user"], "role": r["role"] or "-", "action": r["action"],
        "target": target_text(r["kind"], r["namespace"], r["name"]), "gpus": str(r["gpus"]),
        "decision": decision, "rule": r["rule"] + (" BREAK-GLASS" if is_break_glass(r) else ""),
        "owner": r.get("owner") or "-", "team": r.get("team") or "-", "reason": r.get("reason") or "",
    }


#: Column widths of a followed log, whose later lines cannot widen the columns.
_STREAM_WIDTHS = {"seq": 6, "time": 19, "user": 12, "role": 10, "action": 8, "target": 36, "gpus": 5,
                  "decision": 8, "rule": 0}


def audit_stream_header() -> str:
    return "  ".join(h.ljust(_STREAM_WIDTHS[k]) for k, h in _COLUMNS).rstrip()


def audit_stream_line(row: dict[str, Any]) -> str:
    """One record of a followed log (`gpuctl audit tail`): fixed columns, a long value pushes the rest right."""
    cells = audit_cells(row)
    return "  ".join(cells[k].ljust(_STREAM_WIDTHS[k]) for k, _ in _COLUMNS).rstrip()


def audit_table(rows: Sequence[dict[str, Any]]) -> str:
    """Audit records, one a line; `-o wide` adds owner, team and reason."""
    columns = (*_COLUMNS, *_WIDE_COLUMNS)
    cells = [audit_cells(r) for r in rows]
    return table([h for _, h in columns], [[c[k] for k, _ in columns] for c in cells],
                 wide=[h for _, h in _WIDE_COLUMNS], empty="no audit records match")


def usage_table(users: dict[str, int], teams: dict[str, int]) -> str:
    """GPUs reserved now: one line per user, then one per team, largest first."""
    rows = [("user", n, g) for n, g in users.items()] + [("team", n, g) for n, g in teams.items()]
    if not rows:
        return "no GPUs reserved"
    rows.sort(key=lambda r: (r[0] != "user", -r[2], r[1]))
    width = max(len("NAME"), *(len(name) for _, name, _ in rows))
    lines = [f"{'SCOPE':<5}  {'NAME':<{width}}  GPUS"]
    lines += [f"{scope:<5}  {name:<{width}}  {gpus}" for scope, name, gpus in rows]
    return "\n".join(lines)


def history_text(rows: Sequence[dict[str, Any]]) -> str:
    """One object's timeline: time, who, action, decision, then what changed, one change a line.

    The changes of one record after its first go on lines of their own, under the first.
    """
    if not rows:
        return "no audit records match"
    entries = []
    for r in rows:
        who = f"{r['user']} ({r['role'] or 'no role'})"
        decision = r["decision"].upper() + (" (dry run)" if r.get("dry_run") else "")
        details = [change_text(c) for c in r.get("changes") or []] or [_no_change(r)]
        entries.append(([_time(r["ts"]), who, r["action"], decision], details))
    widths = [max(len(cells[i]) for cells, _ in entries) for i in range(4)]
    indent = " " * (sum(widths) + 2 * len(widths))
    lines = []
    for cells, (first, *more) in entries:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + first)
        lines += [indent + detail for detail in more]
    return "\n".join(lines)


def _no_change(row: dict[str, Any]) -> str:
    if row["action"] == "modify":
        return "no change recorded"
    return f"{row['gpus']} GPUs"


#: How a change's field reads in a sentence ("" where its key says it all).
_FIELD_WORDS = {"count": "", "volumeMount": "volume mount", "data": "data key", "binaryData": "binaryData key"}
_DIGESTED = frozenset({"data", "binaryData"})


def change_text(change: dict[str, Any]) -> str:
    """`image of container pytorch in Worker: ghcr.io/lab/llm:1 -> ghcr.io/eve/llm:evil`."""
    field = str(change.get("field", ""))
    if field == "more":
        return f"... and {change.get('new')} more changes"
    container, template = change.get("container"), change.get("template")
    if field in ("template", "container"):  # the thing added or removed names itself
        subject = f"{field} {change.get(field)}"
    else:
        subject = " ".join(str(p) for p in (_FIELD_WORDS.get(field, field), change.get("key")) if p)
        subject += f" of container {container}" if container else ""
    subject += f" in {template}" if template and field != "template" else ""
    return f"{subject}: {_what_happened(field, change)}"


def _what_happened(field: str, change: dict[str, Any]) -> str:
    def shown(side: str) -> str | None:
        value = change.get(side)
        if value is None:
            return None
        return f"digest {value}" if field in _DIGESTED else str(value)

    old, new = shown("old"), shown("new")
    how = change.get("change")
    if how == "added":
        return "added" + (f" ({new})" if new is not None else "")
    if how == "removed":
        return "removed" + (f" (was {old})" if old is not None else "")
    if old == new:
        return "changed (value not recorded)" if field == "env" else "changed"
    return f"{old or '(unset)'} -> {new or '(unset)'}"


def check_text(result: dict[str, Any]) -> str:
    lines = [
        f"{result['decision'].upper()}: {result['action']} of {result['kind']} "
        f"{result['namespace']}/{result['name']} by {result['user']} (role {result['role'] or 'none'})",
        f"  GPUs counted: {result['gpus']}" + (f" ({result['gpus_detail']})" if result["gpus_detail"] else ""),
        *([f"  charged to: {result['charged_to']}"] if result.get("charged_to") else []),
        f"  rule: {result['rule']} (mode {result['mode']})",
        f"  reason: {result['reason']}",
    ]
    lines += [f"  warning: {w}" for w in result["warnings"]]
    lines += [f"  cap {c['rule']}, {c['subject']}: {cap_figures(c)}" for c in result.get("caps") or []]
    if result.get("usage_note"):
        lines.append(f"  {result['usage_note']}")
    return "\n".join(lines)


def cap_figures(cap: dict[str, Any]) -> str:
    """`8 in use + 32 asked, limit 16 (over)`: one cap of a check result."""
    held = "" if cap["used"] is None else f"{cap['used']} in use + "
    limit = "no limit" if cap["limit"] is None else f"limit {cap['limit']}"
    return f"{held}{cap['asked']} asked, {limit}" + ("" if cap["fits"] else " (over)")


def measured_table(measured: dict[str, Any], scopes: Sequence[str] = ("users", "teams", "workloads")) -> str:
    """GPU-hours and mean utilisation measured by the node agents (docs/agent.md), "" when none."""
    rows = [(scope[:-1], name, f"{m['gpu_hours']:.1f}",
             "-" if m.get("mean_utilization") is None else f"{m['mean_utilization']:.0f}")
            for scope in scopes for name, m in sorted((measured.get(scope) or {}).items())]
    if not rows:
        return ""
    return "Measured on the GPUs (node agents):\n" + table(("BY", "NAME", "GPU-HOURS", "MEAN UTIL %"), rows)
