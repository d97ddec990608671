"""The scheduler and replica benchmarks' parts run and measure what they say, at toy sizes
(the figures come from `python3 -m benchmarks --scheduler --replicas`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from postgres_server import _bin_dir

from benchmarks import replicas, scheduler
from benchmarks.scheduler import api_floor, gang, rebuild


def test_gang_and_rebuild_parts_release_and_repair_at_toy_sizes(tmp_path: Path) -> None:
    g = gang(tmp_path, pods=16)
    assert g["pods"] == g["ungated"] == 16 and g["decide_s"] > 0 and g["controller_pass_s"] > 0
    assert g["controller_cpu_us_per_pod"] > 0
    f = api_floor(16, connections=4)
    assert (f["pods"], f["connections"]) == (16, 4) and f["seconds"] > 0
    r = rebuild(tmp_path, pods=300)
    # 1 in 100 pods is missing from the cluster, 1 in 100 from the ledger, 1 in 10 finished.
    assert (r["pods"], r["ledger_rows"]) == (297, 297)
    assert r["repairs"] == 3 + 3 + 30
    rows = scheduler.summary({"quick": True, "gang": g, "api_floor": f, "rebuild": r, "admission": {}})
    assert [row["goal"] for row in rows if row["goal"]] == ["<= 1 s at 4,096 pods", "<= 10 s at 100,000 pods"]
    assert {row["result"] for row in rows} == {""}, "a run below the goals' sizes passes or fails nothing"


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
@pytest.mark.skipif(_bin_dir() is None, reason="no PostgreSQL server binaries (apt-get install postgresql)")
def test_replicas_part_admits_every_launch_on_one_and_two_replicas(tmp_path: Path) -> None:
    out = replicas.run(tmp_path, connections=4, seconds=1, warmup_s=0, say=lambda _: None)
    for count in (1, 2):
        run = out[f"x{count}"]
        assert run["replicas"] == len(run["per_replica"]) == count
        assert run["requests"] > 0 and run["allowed"] == run["requests"]
        assert run["denied"] == run["non200"] == run["errors"] == 0
    assert out["ratio"] == round(out["x2"]["rps"] / out["x1"]["rps"], 3)
    [_, two] = replicas.summary(out)
    assert two["result"] in ("PASS", "FAIL") and two["goal"].startswith(">= 1.7x")
    assert ("CPUs here: cannot show it" in two["goal"]) == (out["cpus"] < replicas.MIN_CPUS)
