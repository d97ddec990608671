"""The benchmark suite (`python3 -m benchmarks`) still runs: tiny counts, no timing assertions."""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
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
    names = ("bundle", "core", "payloads", "service_bench", "http_bench", "burst", "__main__")
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


@pytest.mark.parametrize("stream", ["mix", "launch"])
def test_wrk_script_carries_every_request_kind(bench, tmp_path, stream):
    script = bench["http_bench"].lua_script(tmp_path / "x.lua", tag="t", rate_per_thread=1000, stream=stream)
    text = script.read_text()
    assert not re.search(r"@[A-Z_]+@", text), "a placeholder of wrk.lua.in was left unfilled"
    assert f'local STREAM = "{stream}"' in text
    for kind in bench["payloads"].stream(stream).kinds:
        assert f"  {kind.kind} = [" in text


def _service(path: Path) -> tuple[AdmissionService, SQLiteStore]:
    store = SQLiteStore(path, synchronous="NORMAL")
    return AdmissionService(PolicyHolder(default_policy_dir()), store, metrics=Metrics()), store


def test_all_launch_stream_is_admitted_and_charged_to_distinct_people(bench, tmp_path):
    payloads, http_bench = bench["payloads"], bench["http_bench"]
    service, store = _service(tmp_path / "launch.db")
    bodies = payloads.stream_bodies(payloads.stream("launch"), 20, "t")
    answers = [service.validate(orjson.loads(raw))["response"] for raw in bodies]
    assert all(a["allowed"] for a in answers), answers
    store.close()
    phase = http_bench.Phase(server="gateway", mode="open", connections=1, seconds=1, offered_rps=None,
                             requests=20, duration_s=1, latency_ms={}, errors={}, non200=0, late=0, paced=0,
                             verdicts={"ptjob:allowed": 10, "batchjob:allowed": 10}, stream="launch", tag="t")
    check = http_bench.launch_ledger(tmp_path / "launch.db", [phase])
    assert check == {"allowed_answers": 20, "denied_answers": 0, "reservations": 20, "charged": 20,
                     "reserved_gpus": 20 * payloads.LAUNCH_GPUS, "usage_users": 20,
                     "usage_gpus": 20 * payloads.LAUNCH_GPUS, "ok": True}
    # More allowed answers than the ledger charged is caught.
    more = dataclasses.replace(phase, verdicts={"ptjob:allowed": 30})
    assert not http_bench.launch_ledger(tmp_path / "launch.db", [more])["ok"]


def test_burst_pods_are_recorded_under_the_admitted_job_uncharged(bench, tmp_path):
    payloads, burst = bench["payloads"], bench["burst"]
    service, store = _service(tmp_path / "burst.db")
    b = payloads.launch_burst("b0", pods=16)
    assert service.validate(orjson.loads(b.job))["response"]["allowed"]
    for raw in b.pods:
        body = orjson.loads(raw)
        assert body["request"]["userInfo"]["username"] == payloads.OPERATOR
        assert body["request"]["object"]["metadata"]["ownerReferences"][0]["uid"] == b.job_uid
        assert service.validate(body)["response"]["allowed"]
    store.close()
    assert burst.burst_ledger(tmp_path / "burst.db", b) == {
        "job_gpus": 16, "job_charged": True, "children": 16, "children_charged": 0, "children_gpus": 16,
        "lead_usage_gpus": 16, "ok": True}
    # A burst the gateway never saw is not in step.
    assert not burst.burst_ledger(tmp_path / "burst.db", payloads.launch_burst("b1", pods=16))["ok"]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_http_phases_stream_burst_and_floor_in_their_quickest_form(bench, tmp_path):
    http_bench, main = bench["http_bench"], bench["__main__"]
    plan = http_bench.HttpPlan(warmup_s=0, closed_rounds=1, closed_s=1, open_rounds=1, open_s=1,
                               closed_connections=4, open_connections=4, rate=200, burst_pods=32, burst_rounds=1,
                               burst_connections=8)
    h = http_bench.run_http(tmp_path, plan, pin=False, say=lambda *_: None)
    assert h["unexpected_gateway_verdicts"] == {}
    assert h["launch_ledgers"]["gateway"]["ok"] and h["launch_ledgers"]["gateway"]["allowed_answers"] > 0
    for name in ("null", "gateway"):
        assert h["launch"][name]["open"]["requests"] > 0
        assert h["launch"][name]["open"]["cpu_us_per_request"] > 0
        assert h["burst"][name]["pods"] == 32 and h["burst"][name]["all_allowed"]
    assert h["burst"]["gateway"]["ledger_ok"] and h["burst"]["gateway"]["runs"][0]["ledger"]["children"] == 32
    assert h["fsync"]["count"] > 0
    rows = {r["figure"]: r for r in main.summary_rows({"http": [h]}, plan.rate)}
    judged = {f: r["result"] for f, r in rows.items() if r["result"]}
    for figure in ("mix p99 @200 req/s vs floor", "all-launch p99 @200 req/s vs floor",
                   "CPU per GPU decision (all-launch @200 req/s)", "all-launch max throughput (4 conns)"):
        assert judged[f"HTTP gateway: {figure}"] in ("PASS", "FAIL")
    assert judged["HTTP gateway: all-launch allowed and charged"] == "PASS"
    assert judged["HTTP gateway: burst pods allowed, recorded under the job, uncharged"] == "PASS"
    assert "HTTP p99 floor @200 req/s, all-launch: null p99 + fsync p99" in rows
    # The time goal is for 4,096 pods only.
    assert not rows["HTTP gateway: 32-pod burst, time to decide all"]["goal"]
