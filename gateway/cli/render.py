"""Terminal rendering for the CLI: tables and check results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

_COLUMNS = (("seq", "#"), ("time", "TIME"), ("user", "USER"), ("role", "ROLE"), ("action", "ACTION"),
            ("target", "TARGET"), ("gpus", "GPUS"), ("decision", "DECISION"), ("rule", "RULE"))


def audit_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "no audit records match"
    cells = []
    for r in rows:
        decision = r["decision"] + (" (dry run)" if r.get("dry_run") else "")
        if r.get("mode") in ("warn", "dry-run") and r["decision"] == "allowed" and r["rule"] not in (
            "role-limits", "ownership"
        ):
            decision += f" [{r['mode']}]"
        cells.append({
            "seq": str(r["seq"]),
            "time": dt.datetime.fromtimestamp(r["ts"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "user": r["user"], "role": r["role"] or "-", "action": r["action"],
            "target": f"{r['kind']} {r['namespace']}/{r['name']}", "gpus": str(r["gpus"]),
            "decision": decision, "rule": r["rule"],
        })
    widths = {k: max(len(h), *(len(c[k]) for c in cells)) for k, h in _COLUMNS}
    lines = ["  ".join(h.ljust(widths[k]) for k, h in _COLUMNS).rstrip()]
    lines += ["  ".join(c[k].ljust(widths[k]) for k, _ in _COLUMNS).rstrip() for c in cells]
    return "\n".join(lines)


def check_text(result: dict[str, Any]) -> str:
    lines = [
        f"{result['decision'].upper()}: {result['action']} of {result['kind']} "
        f"{result['namespace']}/{result['name']} by {result['user']} (role {result['role'] or 'none'})",
        f"  GPUs counted: {result['gpus']}" + (f" ({result['gpus_detail']})" if result["gpus_detail"] else ""),
        f"  rule: {result['rule']} (mode {result['mode']})",
        f"  reason: {result['reason']}",
    ]
    lines += [f"  warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)
