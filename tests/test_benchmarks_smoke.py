"""The benchmark suite (`python3 -m benchmarks`) still runs: tiny counts, no timing assertions."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder, default_policy_dir, load_bundle
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ is beside the package, not installed
    names = ("bundle", "core", "payloads", "service_bench", "http_bench")
    return {n: importlib.import_module(f"benchmarks.{n}") for n in names}


def test_core_benchmark_runs_on_a_small_generated_bundle(bench, tmp_path):
    bundle = bench["bundle"].write_large_bundle(tmp_path / "b", users=200, teams=20)
    policy = load_bundle(bundle.directory)
    assert len(policy.team_caps) == 20
    cases = bench["payloads"].decision_cases(40, users=bundle.users)
    rate = bench["core"].decision_rate(policy, cases, seconds=None, rounds=1)
    assert rate.count == 40 and rate.per_s > 0
    assert sum(bench["core"].verdicts(policy, cases).values()) == 40
    casbin = bench["core"].casbin_rates(bundle, cases, seconds=0.02)
    assert casbin["enforce_per_s"] > 0 and casbin["checks_per_s"] > 0


def test_http_mix_gets_the_verdicts_it_claims(bench, tmp_path):
    payloads = bench["payloads"]
    run = bench["service_bench"].service_times(tmp_path, synchronous="NORMAL", count=40, log_level="WARNING")
    assert run["requests"] == 40 and run["per_s"] > 0
    # Past the first lifecycles (objects not created yet), every kind is answered as described.
    service = AdmissionService(PolicyHolder(default_policy_dir()),
                               SQLiteStore(tmp_path / "mix.db", synchronous="NORMAL"), metrics=Metrics())
    expect = {m.kind: m.expect for m in payloads.http_mix()}
    early = 5 * payloads.MIX_LAG * len(payloads.MIX_SCHEDULE)
    bodies = payloads.mix_bodies(early + 2 * len(payloads.MIX_SCHEDULE), "t")
    for i, raw in enumerate(bodies):
        answer = service.validate(orjson.loads(raw))["response"]
        kind = payloads.mix_request(i, "t")[0]
        if i >= early:
            assert ("allowed" if answer["allowed"] else "denied") == expect[kind], (kind, answer)


def test_wrk_script_carries_every_request_kind(bench, tmp_path):
    script = bench["http_bench"].lua_script(tmp_path / "x.lua", tag="t", rate_per_thread=1000)
    text = script.read_text()
    assert not re.search(r"@[A-Z_]+@", text), "a placeholder of wrk.lua.in was left unfilled"
    for kind in bench["payloads"].mix_shares():
        assert f"  {kind} = [" in text
