"""The scheduler benchmark's parts run and measure what they say, at toy sizes (the figures
come from `python3 -m benchmarks --scheduler`)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.scheduler import gang, rebuild


def test_gang_and_rebuild_parts_release_and_repair_at_toy_sizes(tmp_path: Path) -> None:
    g = gang(tmp_path, pods=16)
    assert g["pods"] == 16 and g["decide_s"] > 0 and g["controller_pass_s"] > 0
    r = rebuild(tmp_path, pods=300)
    # 1 in 100 pods is missing from the cluster, 1 in 100 from the ledger, 1 in 10 finished.
    assert (r["pods"], r["ledger_rows"]) == (297, 297)
    assert r["repairs"] == 3 + 3 + 30
