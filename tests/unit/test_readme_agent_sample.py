"""The simulation file README.md shows is one the agent reads, and its processes map as described."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gateway.telemetry.agent.simulate import parse_simulation
from gateway.telemetry.cgroup import parse_cgroup

README = Path(__file__).resolve().parents[2] / "README.md"


def _sample() -> dict[str, object]:
    section = README.read_text().split("## Node agent", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None, "README's node agent section has no yaml sample"
    data = yaml.safe_load(block.group(1))
    assert isinstance(data, dict)
    return data


def test_readme_simulation_sample_loads_and_maps_its_processes() -> None:
    raw = _sample()
    simulation = parse_simulation(raw)
    assert simulation.ticks == 6
    gpu = raw["gpus"][0]  # type: ignore[index]
    worker, stranger = gpu["processes"]
    ref = parse_cgroup(worker["cgroup"])
    assert ref is not None and ref.pod_uid == "0b6c3f4e-7d2a-4c1b-9e8f-5a6b7c8d9e00"
    other = parse_cgroup(stranger["cgroup"])
    assert other is None or not other.pod_uid
