"""In-process figures: the pure decision pipeline, raw casbin, and bundle loading.

All on one large generated bundle (`benchmarks.bundle`). The pipeline measured is the one
`AdmissionService.validate` runs around the store: ``parse_review(body) -> prepare(req,
policy) -> decide(plan, policy, Facts(...))``, with facts as the ledger would supply them.
"""

from __future__ import annotations

import cProfile
import gc
import io
import itertools
import pstats
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import casbin
import orjson

from benchmarks.bundle import LargeBundle
from benchmarks.payloads import DecisionCase
from gateway.admission.admission import Facts, Target, decide, prepare
from gateway.admission.identity import subjects
from gateway.admission.policy import SCOPES, Policy
from gateway.admission.quota import Usage
from gateway.admission.review import parse_review
from gateway.policy_bundle import load_bundle


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float
    cpu_seconds: float = 0.0
    """CPU time of this process over the same span: a steadier figure on a shared machine."""

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.count / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    @property
    def us_each(self) -> float:
        return self.seconds / self.count * 1e6 if self.count else 0.0


def _facts(case: DecisionCase) -> Facts:
    target = Target(*case.target) if case.target else None
    return Facts(target=target, usage=Usage(*case.usage))


def _timed(run_once: Callable[[], int], *, seconds: float | None, rounds: int | None) -> Rate:
    """Call `run_once` (which returns how many operations it did) until time or rounds run out."""
    count, done = 0, 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while True:
        count += run_once()
        done += 1
        if rounds is not None and done >= rounds:
            break
        if seconds is not None and time.perf_counter() - started >= seconds:
            break
    return Rate(count, time.perf_counter() - started, time.process_time() - cpu_started)


def decision_rate(policy: Policy, cases: Sequence[DecisionCase], *, seconds: float | None = 2.0,
                  rounds: int | None = None, decode: bool = False) -> Rate:
    """Decisions/s of parse_review -> prepare -> decide over `cases`, cycled.

    With `decode`, each decision also starts from the JSON bytes (orjson.loads), as the
    HTTP adapter does. One untimed pass first warms the policy's identity cache.
    """
    pairs = [(c.raw if decode else c.body, _facts(c)) for c in cases]

    def once() -> int:
        for body, facts in pairs:
            if decode:
                body = orjson.loads(body)
            decide(prepare(parse_review(body), policy), policy, facts)
        return len(pairs)

    once()
    return _timed(once, seconds=seconds, rounds=rounds)


def stage_rates(policy: Policy, cases: Sequence[DecisionCase], *, seconds: float = 0.5) -> dict[str, float]:
    """Microseconds per call of each stage alone (averaged over `cases`)."""
    reqs = [parse_review(c.body) for c in cases]
    plans = [prepare(r, policy) for r in reqs]
    facts = [_facts(c) for c in cases]
    bodies = [c.body for c in cases]
    raws = [c.raw for c in cases]

    def decode() -> int:
        for raw in raws:
            orjson.loads(raw)
        return len(raws)

    def parse() -> int:
        for body in bodies:
            parse_review(body)
        return len(bodies)

    def prep() -> int:
        for req in reqs:
            prepare(req, policy)
        return len(reqs)

    def dec() -> int:
        for plan, f in zip(plans, facts, strict=True):
            decide(plan, policy, f)
        return len(plans)

    return {name: _timed(fn, seconds=seconds, rounds=None).us_each
            for name, fn in (("orjson.loads", decode), ("parse_review", parse), ("prepare", prep),
                             ("decide", dec))}


def verdicts(policy: Policy, cases: Sequence[DecisionCase]) -> dict[str, int]:
    """How the cases are decided: `allowed`/`denied` by rule (to show the mix is varied)."""
    out: Counter[str] = Counter()
    for c in cases:
        d = decide(prepare(parse_review(c.body), policy), policy, _facts(c))
        out[f"{d.verdict}:{d.rule}"] += 1
    return dict(out.most_common())


def casbin_rates(bundle: LargeBundle, cases: Sequence[DecisionCase], *, seconds: float = 2.0) -> dict[str, Any]:
    """The same permission questions asked of a plain casbin Enforcer on the same bundle.

    `enforce/s`: single ``enforce(sub, act, scope)`` calls. `checks/s`: the question one
    decision asks ("may this person launch/kill/exec at this scope?") answered with casbin
    directly: each of the person's subjects (``user:``, ``group:``) at each scope that
    covers the target, until one allows.
    """
    started = time.perf_counter()
    enforcer = casbin.Enforcer(str(bundle.directory / "model.conf"), str(bundle.directory / "policy.csv"))
    build_s = time.perf_counter() - started
    questions: list[tuple[list[str], str, str]] = []
    for c in cases:
        req = parse_review(c.body)
        act = {"CREATE": "launch", "DELETE": "kill", "CONNECT": "exec"}.get(req.operation, "modify")
        scope = "own" if c.target is None or c.target[0] == req.username else "any"
        questions.append((subjects(req.username, req.groups), act, scope))
    # Slices of 100, cycled: casbin is slow enough that a whole pass would overrun `seconds`.
    slices = itertools.cycle([questions[i:i + 100] for i in range(0, len(questions), 100)])

    def one_call() -> int:
        batch = next(slices)
        for subs, act, scope in batch:
            enforcer.enforce(subs[0], act, scope)
        return len(batch)

    def check() -> int:
        batch = next(slices)
        for subs, act, scope in batch:
            start = SCOPES.index(scope)
            any(enforcer.enforce(sub, act, s) for s in SCOPES[start:] for sub in subs)
        return len(batch)

    calls = _timed(one_call, seconds=seconds / 2, rounds=None)
    checks = _timed(check, seconds=seconds / 2, rounds=None)
    return {"enforcer_build_s": build_s, "enforce_per_s": calls.per_s, "enforce_us": calls.us_each,
            "checks_per_s": checks.per_s, "check_us": checks.us_each}


def load_time(directory: Path, *, repeats: int = 3) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        load_bundle(directory)
        times.append(time.perf_counter() - started)
    return {"best_s": min(times), "median_s": statistics.median(times), "repeats": repeats}


def profile_decisions(policy: Policy, cases: Sequence[DecisionCase], *, rounds: int = 3, top: int = 25) -> str:
    """cProfile of the pipeline over `cases`: the functions with the most own time."""
    pairs = [(c.body, _facts(c)) for c in cases]
    decision_rate(policy, cases, rounds=1, seconds=None)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        for body, facts in pairs:
            decide(prepare(parse_review(body), policy), policy, facts)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()

