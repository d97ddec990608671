"""``python3 -m benchmarks``: run every benchmark, print figures, ratios and goals.

    python3 -m benchmarks                    # full run (about 4 minutes)
    python3 -m benchmarks --quick            # smoke run (about a minute)
    python3 -m benchmarks --json out.json    # also write the results as JSON
    python3 -m benchmarks --tls              # also the HTTP phases over TLS
    python3 -m benchmarks --profile          # also cProfile the decision pipeline
    python3 -m benchmarks --scheduler        # only the controller's figures (gang release, ledger rebuild)
    python3 -m benchmarks --replicas         # only two replicas on PostgreSQL against one
    python3 -m benchmarks --all              # every figure of the three above, one summary
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks import burst as bursts
from benchmarks import core, http_bench, payloads, service_bench
from benchmarks.bundle import write_large_bundle
from gateway.policy_bundle import load_bundle

CORE_GOAL = 50_000.0
P99_GOAL = 1.5
CPU_GOAL_US = 120.0
THROUGHPUT_GOAL = 8_000.0
BURST_GOAL_S = 2.0


def say(text: str = "") -> None:
    print(text, flush=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--tls", action="store_true", help="also run the HTTP phases over TLS")
    parser.add_argument("--skip-http", action="store_true", help="in-process figures only")
    parser.add_argument("--rate", type=float, default=2000.0, help="open-loop offered rate (req/s)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--gateway-sync", metavar="MODES",
                        help="comma-separated store synchronous settings, one gateway server each "
                             "(default FULL,NORMAL; FULL with --quick); FULL is the production default")
    parser.add_argument("--log-level", default="INFO", help="the gateway's log level (production default INFO)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers to CPU 0 and wrk to CPU 1")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the decision pipeline")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, state, wrk scripts)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--scheduler", action="store_true",
                        help="only the scheduler-shim figures (4,096-pod gang, 100,000-pod ledger rebuild, "
                             "admission latency SQLite vs PostgreSQL; benchmarks/scheduler.py)")
    parser.add_argument("--replicas", action="store_true",
                        help="only two gateway replicas on PostgreSQL against one, all-launch closed loop "
                             "(benchmarks/replicas.py); with --scheduler, both")
    parser.add_argument("--all", action="store_true",
                        help="the admission figures, then --scheduler's and --replicas', in one summary")
    args = parser.parse_args(argv)
    most = (payloads.MIX_LAG - 1) * len(payloads.MIX_SCHEDULE)
    if not 1 <= args.connections <= most:
        parser.error(f"--connections must be 1..{most} (more would reorder the mix's lifecycles)")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    modes = args.gateway_sync or ("FULL" if args.quick else "FULL,NORMAL")
    args.gateway_sync = tuple(m.strip().upper() for m in modes.split(",") if m.strip())
    if not args.gateway_sync or not set(args.gateway_sync) <= {"FULL", "NORMAL", "EXTRA"}:
        parser.error("--gateway-sync takes FULL, NORMAL or EXTRA, comma-separated")
    return args


def _environment() -> dict[str, Any]:
    wrk = http_bench.wrk_path()
    version = ""
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        version = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "wrk": version or None}


# --------------------------------------------------------------------------- parts


def run_core(workdir: Path, *, quick: bool, profile: bool) -> dict[str, Any]:
    say("In-process: the decision pipeline on a large bundle")
    started = time.perf_counter()
    bundle = write_large_bundle(workdir / "large-bundle")
    say(f"  bundle: {len(bundle.users):,} users, {len(bundle.teams):,} teams with caps, "
        f"{bundle.g_lines:,} g lines, {bundle.p_lines} p lines ({time.perf_counter() - started:.2f} s to write)")
    loading = core.load_time(bundle.directory, repeats=1 if quick else 3)
    say(f"  load_bundle: {loading['best_s'] * 1e3:,.0f} ms (best of {loading['repeats']})")
    policy = load_bundle(bundle.directory)
    cases = payloads.decision_cases(500 if quick else 2000, users=bundle.users)
    mix = core.verdicts(policy, cases)
    say(f"  {len(cases):,} varied requests by {len({c.body['request']['userInfo']['username'] for c in cases}):,}"
        f" users; verdicts: " + ", ".join(f"{k} {v}" for k, v in mix.items()))
    rate = core.decision_rate(policy, cases, seconds=1.0 if quick else 3.0)
    say(f"  parse_review -> prepare -> decide: {rate.per_s:,.0f} decisions/s ({rate.us_each:.1f} us each; "
        f"by CPU time {rate.per_cpu_s:,.0f}/s)")
    decoded = core.decision_rate(policy, cases, seconds=0.5 if quick else 1.5, decode=True)
    say(f"  the same from JSON bytes (orjson.loads first): {decoded.per_s:,.0f} decisions/s")
    stages = core.stage_rates(policy, cases, seconds=0.2 if quick else 0.4)
    say("  per stage: " + ", ".join(f"{k} {v:.1f} us" for k, v in stages.items()))
    casbin = core.casbin_rates(bundle, cases, seconds=0.6 if quick else 2.0)
    say(f"  raw casbin Enforcer on the same bundle: {casbin['enforce_per_s']:,.0f} enforce()/s; "
        f"the permission check of one decision asked of casbin: {casbin['checks_per_s']:,.0f}/s "
        f"(build {casbin['enforcer_build_s'] * 1e3:,.0f} ms)")
    out: dict[str, Any] = {
        "bundle": {"users": len(bundle.users), "teams": len(bundle.teams), "g_lines": bundle.g_lines,
                   "p_lines": bundle.p_lines},
        "load_bundle": loading,
        "cases": len(cases),
        "verdicts": mix,
        "decisions_per_s": rate.per_s,
        "decisions_per_cpu_s": rate.per_cpu_s,
        "decision_us": rate.us_each,
        "decisions_per_s_with_decode": decoded.per_s,
        "stage_us": stages,
        "casbin": casbin,
    }
    if profile:
        text = core.profile_decisions(policy, cases, rounds=1 if quick else 3)
        say("  cProfile of the pipeline (own time):")
        say("\n".join("    " + line for line in text.strip().splitlines()))
    return out


def run_service(workdir: Path, *, quick: bool, log_level: str) -> dict[str, Any]:
    say("In-process: AdmissionService.validate with the store (the HTTP mix, no HTTP)")
    fsync = service_bench.fsync_latency(workdir)
    say(f"  disk: write+fsync {fsync['p50_ms']:.2f} ms p50, {fsync['p99_ms']:.2f} ms p99 "
        f"({fsync['count']} probes in {workdir})")
    out: dict[str, Any] = {"fsync": fsync, "runs": []}
    for mode in ("FULL", "NORMAL"):
        r = service_bench.service_times(workdir / "service", synchronous=mode, count=600 if quick else 3000,
                                        log_level=log_level)
        out["runs"].append(r)
        kinds = r["by_kind_mean_us"]
        say(f"  synchronous={mode:6}: {r['per_s']:7,.0f} req/s serial, mean {r['mean_us']:6.0f} us, "
            f"p50 {r['p50_us']:5.0f} us, p99 {r['p99_us']:6.0f} us")
        say("    mean us by kind: " + ", ".join(f"{k} {v:.0f}" for k, v in kinds.items()))
    return out


def run_http(workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    if http_bench.wrk_path() is None:
        say("HTTP: SKIPPED: wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")
        return []
    if args.quick:
        plan = http_bench.HttpPlan(warmup_s=1, closed_rounds=1, closed_s=3, open_rounds=1, open_s=4,
                                   closed_connections=args.connections, open_connections=args.connections,
                                   rate=args.rate, burst_rounds=1)
    else:
        plan = http_bench.HttpPlan(closed_connections=args.connections, open_connections=args.connections,
                                   rate=args.rate)
    shares = payloads.mix_shares()
    say("HTTP: POST /validate, gateway vs null webhook (wrk, 1 thread, loopback)")
    say("  mix per 20 requests:")
    for m in payloads.http_mix():
        say(f"    {shares[m.kind] * 20:2.0f} {m.kind:10} {m.description}")
    say("  all-launch stream, alternately:")
    for m in payloads.launch_stream():
        say(f"       {m.kind:10} {m.description}")
    say(f"  burst: a lead's PyTorchJob of {plan.burst_pods:,} one-GPU pods, then the training operator's "
        f"{plan.burst_pods:,} pod creates at once over {plan.burst_connections} connections "
        f"(client: {bursts.CLIENT})")
    results = []
    for tls in (False, True) if args.tls else (False,):
        r = http_bench.run_http(workdir / ("tls" if tls else "plain"), plan, tls=tls, log_level=args.log_level,
                                synchronous=args.gateway_sync, pin=not args.no_pin, say=say)
        for name, ledger in r["ledgers"].items():
            say(f"  {name} wrote {ledger['audit_rows']:,} audit rows for the mix; {ledger['reservations']} "
                f"reservations ({ledger['reserved_gpus']:,} GPUs) still held after it")
        for name, check in r["launch_ledgers"].items():
            say(f"  {name}, all-launch: {check['allowed_answers']:,} answered allowed, {check['denied_answers']:,} "
                f"otherwise; {check['reservations']:,} reservations of their people, {check['charged']:,} charged, "
                f"{check['reserved_gpus']:,} GPUs: " + ("in step" if check["ok"] else "WRONG"))
        r["mix"] = {m.kind: {"per_20": round(shares[m.kind] * 20), "expect": m.expect,
                             "description": m.description} for m in payloads.http_mix()}
        if r["unexpected_gateway_verdicts"]:
            say(f"  WARNING: unexpected gateway verdicts: {r['unexpected_gateway_verdicts']}")
        results.append(r)
    if results:
        results[-1]["fsync_after"] = results[-1]["fsync"]
    return results


# --------------------------------------------------------------------------- summary


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def summary_rows(results: dict[str, Any], rate: float) -> list[dict[str, Any]]:
    """(figure, value, baseline, ratio, goal, result) rows for the table and the JSON."""
    rows: list[dict[str, Any]] = []

    def row(figure: str, value: str, baseline: str = "", ratio: float | None = None, goal: str = "",
            ok: bool | None = None) -> None:
        rows.append({"figure": figure, "value": value, "baseline": baseline,
                     "ratio": None if ratio is None else round(ratio, 3), "goal": goal,
                     "result": "" if ok is None else ("PASS" if ok else "FAIL")})

    c = results.get("core")
    if c:
        cas = c["casbin"]
        row("parse + prepare + decide/s (10k users, 1k teams)", _fmt_rate(c["decisions_per_s"]),
            f"casbin checks {_fmt_rate(cas['checks_per_s'])}", c["decisions_per_s"] / cas["checks_per_s"],
            f">= {CORE_GOAL:,.0f}/s", c["decisions_per_s"] >= CORE_GOAL)
        decide_rate = 1e6 / c["stage_us"]["decide"]
        row("decide() alone: policy + ledger facts -> Decision", _fmt_rate(decide_rate), "", None,
            f">= {CORE_GOAL:,.0f}/s", decide_rate >= CORE_GOAL)
        row("core decisions/s by CPU time (same run)", _fmt_rate(c["decisions_per_cpu_s"]))
        row("core decisions/s incl. orjson.loads", _fmt_rate(c["decisions_per_s_with_decode"]))
        row("casbin enforce() calls/s (same bundle)", _fmt_rate(cas["enforce_per_s"]))
        row("load_bundle (large bundle)", f"{c['load_bundle']['best_s'] * 1e3:,.0f} ms")
    s = results.get("service")
    if s:
        row("disk write+fsync p50 / p99", f"{s['fsync']['p50_ms']:.2f} / {s['fsync']['p99_ms']:.2f} ms")
        for run in s["runs"]:
            row(f"validate() in-process, {run['synchronous']} (serial)",
                f"{run['mean_us']:,.0f} us mean, p99 {run['p99_us']:,.0f} us", ratio=None)
    for h in results.get("http", []):
        label = "TLS" if h["tls"] else "HTTP"
        null = h["summary"]["null"]
        nc, no = null["closed"], null["open"]
        row(f"{label} null webhook: max throughput", _fmt_rate(nc["rps"]))
        row(f"{label} null webhook: p50 / p99 @{rate:,.0f} req/s", f"{no['p50_ms']:.2f} / {no['p99_ms']:.2f} ms")
        for name, sm in h["summary"].items():
            if name == "null":
                continue
            gc_, go = sm["closed"], sm["open"]
            row(f"{label} {name}: max throughput ({h['connections']['closed']} conns)", _fmt_rate(gc_["rps"]),
                f"null {_fmt_rate(nc['rps'])}", gc_["rps"] / nc["rps"] if nc["rps"] else None)
            row(f"{label} {name}: achieved @{rate:,.0f} offered", _fmt_rate(go["rps"]),
                f"null {_fmt_rate(no['rps'])}", go["rps"] / no["rps"] if no["rps"] else None,
                f"late slots {go['late_slots'] / max(go['paced_slots'], 1):.1%}")
            row(f"{label} {name}: p50 @{rate:,.0f} req/s", f"{go['p50_ms']:.2f} ms", f"null {no['p50_ms']:.2f} ms",
                go["p50_ms"] / no["p50_ms"] if no["p50_ms"] else None)
            ratio = go["p99_ms"] / no["p99_ms"] if no["p99_ms"] else float("inf")
            of_rounds = f" (median of {go['rounds']} rounds)" if go["rounds"] > 1 else ""
            row(f"{label} {name}: p99 @{rate:,.0f} req/s{of_rounds}", f"{go['p99_ms']:.2f} ms",
                f"null {no['p99_ms']:.2f} ms", ratio, f"<= {P99_GOAL}x null", ratio <= P99_GOAL)
            if go["rounds"] > 1:
                row(f"{label} {name}: p99 worst round", f"{go['p99_ms_worst']:.2f} ms",
                    f"null {no['p99_ms_worst']:.2f} ms",
                    go["p99_ms_worst"] / no["p99_ms_worst"] if no["p99_ms_worst"] else None)
        if "launch" in h:
            _goal_rows(row, h, label, rate)
    return rows


def _goal_rows(row: Any, h: dict[str, Any], label: str, rate: float) -> None:
    """The floor, the all-launch stream, CPU per decision and the burst: goals for the gateway at
    the production default (synchronous=FULL), figures only for the other settings."""
    at = f"@{rate:,.0f} req/s"
    fsync = h["fsync"]["p99_ms"]
    row(f"{label} state disk write+fsync p50 / p99", f"{h['fsync']['p50_ms']:.2f} / {fsync:.2f} ms")
    floors = {}
    for stream, by_server in (("mix", h["summary"]), ("all-launch", h["launch"])):
        null_p99 = by_server["null"]["open"]["p99_ms"]
        floors[stream] = null_p99 + fsync
        row(f"{label} p99 floor {at}, {stream}: null p99 + fsync p99", f"{floors[stream]:.2f} ms",
            f"null {null_p99:.2f} + fsync {fsync:.2f} ms")
    nl = h["launch"]["null"]
    nc, no = nl["closed"], nl["open"]
    row(f"{label} null webhook: all-launch max throughput", _fmt_rate(nc["rps"]))
    row(f"{label} null webhook: all-launch p50 / p99 {at}", f"{no['p50_ms']:.2f} / {no['p99_ms']:.2f} ms")
    burst = h["burst"]
    nb = burst.get("null")
    if nb:
        row(f"{label} null webhook: {nb['pods']:,}-pod burst, time to decide all",
            f"{nb['seconds']:.2f} s ({_fmt_rate(nb['per_s'])}), p99 {nb['p99_ms']:.1f} ms",
            f"client {nb['client_cpu_us']:.0f} us CPU/request")
    for name, sm in h["launch"].items():
        if name == "null":
            continue
        goal = name == http_bench.gateway_name("FULL")

        def judged(ok: bool, goal: bool = goal) -> bool | None:
            return ok if goal else None

        mix_p99 = h["summary"][name]["open"]["p99_ms"]
        row(f"{label} {name}: mix p99 {at} vs floor", f"{mix_p99:.2f} ms", f"floor {floors['mix']:.2f} ms",
            mix_p99 / floors["mix"], "<= floor" if goal else "", judged(mix_p99 <= floors["mix"]))
        gc_, go = sm["closed"], sm["open"]
        row(f"{label} {name}: all-launch achieved {at} offered", _fmt_rate(go["rps"]), f"null {_fmt_rate(no['rps'])}",
            go["rps"] / no["rps"] if no["rps"] else None,
            f"late slots {go['late_slots'] / max(go['paced_slots'], 1):.1%}")
        row(f"{label} {name}: all-launch p50 {at}", f"{go['p50_ms']:.2f} ms", f"null {no['p50_ms']:.2f} ms",
            go["p50_ms"] / no["p50_ms"] if no["p50_ms"] else None)
        row(f"{label} {name}: all-launch p99 {at} vs floor", f"{go['p99_ms']:.2f} ms",
            f"floor {floors['all-launch']:.2f} ms", go["p99_ms"] / floors["all-launch"],
            "<= floor" if goal else "", judged(go["p99_ms"] <= floors["all-launch"]))
        cpu, null_cpu = go["cpu_us_per_request"], no["cpu_us_per_request"]
        if cpu is not None and null_cpu is not None:
            row(f"{label} {name}: CPU per GPU decision (all-launch {at})", f"{cpu:.0f} us",
                f"null {null_cpu:.0f} us", cpu / null_cpu if null_cpu else None,
                f"<= {CPU_GOAL_US:.0f} us" if goal else "", judged(cpu <= CPU_GOAL_US))
        row(f"{label} {name}: all-launch max throughput ({h['connections']['closed']} conns)",
            _fmt_rate(gc_["rps"]), f"null {_fmt_rate(nc['rps'])}", gc_["rps"] / nc["rps"] if nc["rps"] else None,
            f">= {THROUGHPUT_GOAL:,.0f}/s" if goal else "", judged(gc_["rps"] >= THROUGHPUT_GOAL))
        check = h["launch_ledgers"][name]
        row(f"{label} {name}: all-launch allowed and charged",
            f"{check['allowed_answers']:,} allowed, {check['denied_answers']:,} denied; {check['charged']:,} charged "
            f"{payloads.LAUNCH_GPUS} GPUs each", f"+{check['charged'] - check['allowed_answers']} answered past "
            "wrk's deadline", None, "all", check["ok"])
        gb = burst.get(name)
        if not gb:
            continue
        of_rounds = f" (median of {gb['rounds']})" if gb["rounds"] > 1 else ""
        full = gb["pods"] == payloads.BURST_PODS
        row(f"{label} {name}: {gb['pods']:,}-pod burst, time to decide all{of_rounds}",
            f"{gb['seconds']:.2f} s ({_fmt_rate(gb['per_s'])})", f"null {nb['seconds']:.2f} s" if nb else "",
            gb["seconds"] / nb["seconds"] if nb and nb["seconds"] else None,
            f"<= {BURST_GOAL_S:.0f} s" if goal and full else "", judged(gb["seconds"] <= BURST_GOAL_S, goal and full))
        row(f"{label} {name}: {gb['pods']:,}-pod burst p99{of_rounds}", f"{gb['p99_ms']:.1f} ms",
            f"null {nb['p99_ms']:.1f} ms" if nb else "",
            gb["p99_ms"] / nb["p99_ms"] if nb and nb["p99_ms"] else None)
        row(f"{label} {name}: burst pods allowed, recorded under the job, uncharged",
            f"{sum(r['allowed'] for r in gb['runs']):,} / {sum(r['pods'] for r in gb['runs']):,}",
            "", None, "all", gb["all_allowed"] and gb["ledger_ok"])


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ("figure", "value", "baseline", "ratio", "goal", "result")
    cells = [[str(r[h]) if r[h] is not None else "" for h in headers] for r in rows]
    for line in cells:
        if line[3]:
            line[3] = f"{float(line[3]):.2f}x"
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    say("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    say("  ".join("-" * w for w in widths))
    for line in cells:
        say("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def controller_parts(args: argparse.Namespace, results: dict[str, Any], *, scheduler_part: bool,
                     replicas_part: bool) -> tuple[list[dict[str, Any]], bool]:
    """Run the scheduler's and/or the replicas' benchmarks into `results`: their summary rows,
    and whether one failed to run."""
    from benchmarks import replicas, scheduler

    rows: list[dict[str, Any]] = []
    try:
        if scheduler_part:
            results["scheduler"] = scheduler.run(quick=args.quick, say=say)
            rows += scheduler.summary(results["scheduler"])
            say()
        if replicas_part:
            results["replicas"] = replicas.run(quick=args.quick, log_level=args.log_level, say=say)
            rows += replicas.summary(results["replicas"])
            say()
    except (http_bench.HttpBenchError, OSError) as exc:
        say(f"ERROR: {exc}")
        results["error"] = str(exc)
        return rows, True
    return rows, False


def run_controller_parts(args: argparse.Namespace) -> int:
    """`--scheduler` and/or `--replicas`: their figures, one summary table, the JSON."""
    started = time.perf_counter()
    say(f"gpu-gateway benchmarks ({'quick' if args.quick else 'full'} run): Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs")
    results: dict[str, Any] = {"environment": _environment(), "quick": args.quick}
    rows, failed = controller_parts(args, results, scheduler_part=args.scheduler, replicas_part=args.replicas)
    return _finish(args, results, rows, started, failed)


def _finish(args: argparse.Namespace, results: dict[str, Any], rows: list[dict[str, Any]], started: float,
            failed: bool) -> int:
    """The summary table and the JSON; the exit status."""
    results["summary"] = rows
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    say(f"Summary ({results['elapsed_s']:.0f} s)")
    print_table(rows)
    if args.keep and "workdir" in results:
        say(f"work dir kept: {results['workdir']}")
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2, default=str))
        say(f"results written to {args.json}")
    missed = any(r["result"] == "FAIL" for r in rows)
    return 1 if failed or (args.strict and missed) else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.scheduler or args.replicas:
        return run_controller_parts(args)
    env = _environment()
    started = time.perf_counter()
    say(f"gpu-gateway benchmarks ({'quick' if args.quick else 'full'} run): Python {env['python']}, "
        f"{env['cpus']} CPUs, {env['wrk'] or 'no wrk'}; the load generator shares these CPUs")
    workdir = Path(tempfile.mkdtemp(prefix="gpu-gateway-bench-"))
    results: dict[str, Any] = {"environment": env, "quick": args.quick, "workdir": str(workdir)}
    failed = False
    try:
        results["core"] = run_core(workdir, quick=args.quick, profile=args.profile)
        say()
        results["service"] = run_service(workdir, quick=args.quick, log_level=args.log_level)
        say()
        if not args.skip_http:
            results["http"] = run_http(workdir, args)
            say()
    except (http_bench.HttpBenchError, bursts.BurstError, OSError) as exc:
        say(f"ERROR: {exc}")
        results["error"] = str(exc)
        failed = True
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = summary_rows(results, args.rate)
    if args.all:
        more, more_failed = controller_parts(args, results, scheduler_part=True, replicas_part=True)
        rows += more
        failed = failed or more_failed
    return _finish(args, results, rows, started, failed)


if __name__ == "__main__":
    sys.exit(main())
