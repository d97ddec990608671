"""A scripted device table in place of NVML: `gpu-gateway agent --simulate FILE`.

The file (YAML or JSON; docs/agent.md shows one) lists GPUs with their readings per tick,
the processes on them with their cgroup paths, errors (XID events, ECC counts, a GPU lost,
NVML failing as a whole) and the pods the kubelet would name for each pod UID. Each read is
one tick; a series' last value repeats. Everything else in the agent runs as in production:
cgroup parsing, pod mapping, batching, the disk buffer, reporting and /metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.telemetry.agent.nvml import NvmlUnavailable
from gateway.telemetry.samples import GpuProcess, GpuSample, PodRef

MIB = 2**20


class SimulationError(ValueError):
    """The simulation file cannot be read; the message names the field."""


def _series(value: Any, where: str) -> list[float]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SimulationError(f"{where}: {v!r} is not a number")
    return [float(v) for v in values]


def _at(series: list[float], tick: int) -> float | None:
    if not series:
        return None
    return series[min(tick, len(series) - 1)]


@dataclass(frozen=True)
class _Process:
    pid: int
    used_memory_mib: list[float]
    cgroup: str
    ticks: tuple[int, int | None]


@dataclass(frozen=True)
class _Gpu:
    uuid: str
    model: str
    memory_total_mib: float | None
    series: dict[str, list[float]]
    xid: dict[int, tuple[int, ...]]
    allocated_to: str
    lost_from: int | None
    processes: tuple[_Process, ...]


@dataclass
class Simulation:
    node: str
    interval_s: float
    ticks: int
    pods: dict[str, PodRef]
    gpus: list[_Gpu]
    nvml_unavailable: frozenset[int] = field(default_factory=frozenset)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SimulationError(f"{where} must be a mapping")
    return value


def load_simulation(path: Path) -> Simulation:
    try:
        text = Path(path).read_text()
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SimulationError(f"cannot read simulation file {path}: {exc}") from None
    return parse_simulation(raw)


def parse_simulation(raw: Any) -> Simulation:
    top = _mapping(raw, "the simulation file")
    unknown = sorted(set(top) - {"node", "interval_s", "ticks", "pods", "gpus", "nvml_unavailable"})
    if unknown:
        raise SimulationError(f"unknown key(s) {', '.join(map(str, unknown))}")
    pods = {}
    for uid, ref in _mapping(top.get("pods") or {}, "pods").items():
        ref = _mapping(ref, f"pods.{uid}")
        if not isinstance(ref.get("namespace"), str) or not isinstance(ref.get("name"), str):
            raise SimulationError(f"pods.{uid} needs namespace and name")
        pods[str(uid)] = PodRef(ref["namespace"], ref["name"])
    gpus = []
    raw_gpus = top.get("gpus")
    if not isinstance(raw_gpus, list) or not raw_gpus:
        raise SimulationError("gpus must be a non-empty list")
    longest = 1
    for i, g in enumerate(raw_gpus):
        g = _mapping(g, f"gpus[{i}]")
        if not isinstance(g.get("uuid"), str) or not g["uuid"]:
            raise SimulationError(f"gpus[{i}].uuid must be a string")
        series = {k: _series(g.get(k), f"gpus[{i}].{k}") for k in (
            "utilization", "memory_used_mib", "power_w", "temperature_c", "ecc_corrected", "ecc_uncorrected")}
        longest = max(longest, *(len(s) for s in series.values()))
        xid = {int(t): tuple(int(x) for x in (v if isinstance(v, list) else [v]))
               for t, v in _mapping(g.get("xid") or {}, f"gpus[{i}].xid").items()}
        procs = []
        for j, p in enumerate(g.get("processes") or []):
            p = _mapping(p, f"gpus[{i}].processes[{j}]")
            ticks = p.get("ticks") or [0, None]
            if not isinstance(p.get("pid"), int) or not isinstance(ticks, list) or len(ticks) != 2:
                raise SimulationError(f"gpus[{i}].processes[{j}] needs an integer pid and ticks [from, until]")
            procs.append(_Process(p["pid"], _series(p.get("used_memory_mib", 0), f"gpus[{i}].processes[{j}]"),
                                  str(p.get("cgroup") or "0::/"), (int(ticks[0]), ticks[1])))
        gpus.append(_Gpu(g["uuid"], str(g.get("model", "Simulated GPU")),
                         float(g["memory_total_mib"]) if g.get("memory_total_mib") is not None else None,
                         series, xid, str(g.get("allocated_to") or ""),
                         int(g["lost_from"]) if g.get("lost_from") is not None else None, tuple(procs)))
    interval = top.get("interval_s", 10)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval <= 300:
        raise SimulationError("interval_s must be a number of seconds from 0 to 300")
    ticks = top.get("ticks", longest)
    if not isinstance(ticks, int) or ticks < 1:
        raise SimulationError("ticks must be a positive integer")
    return Simulation(str(top.get("node") or "simulated-node"), float(interval), ticks, pods, gpus,
                      frozenset(int(t) for t in top.get("nvml_unavailable") or []))


class ScriptedSource:
    """`DeviceSource` and cgroup reader over a `Simulation`: each `read()` is the next tick."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.tick = -1
        self._cgroups: dict[int, str] = {}

    @property
    def done(self) -> bool:
        return self.tick + 1 >= self.sim.ticks

    def read(self) -> list[GpuSample]:
        self.tick += 1
        t = self.tick
        if t in self.sim.nvml_unavailable:
            raise NvmlUnavailable("NVML cannot start: Driver Not Loaded (scripted)")
        self._cgroups = {}
        out = []
        for index, g in enumerate(self.sim.gpus):
            if g.lost_from is not None and t >= g.lost_from:
                out.append(GpuSample(index=index, uuid=g.uuid, model=g.model,
                                     error="GPU is lost (fell off the bus or needs a reset)"))
                continue
            procs = []
            for p in g.processes:
                start, until = p.ticks
                if start <= t and (until is None or t < until):
                    procs.append(GpuProcess(p.pid, int((_at(p.used_memory_mib, t) or 0) * MIB)))
                    self._cgroups[p.pid] = p.cgroup
            s = g.series

            def num(key: str, scale: float = 1.0, s: dict[str, list[float]] = s) -> Any:
                v = _at(s[key], t)
                return None if v is None else v * scale

            used = num("memory_used_mib", MIB)
            out.append(GpuSample(
                index=index, uuid=g.uuid, model=g.model, utilization=num("utilization"),
                memory_used_bytes=int(used) if used is not None else sum(p.used_memory_bytes for p in procs),
                memory_total_bytes=int(g.memory_total_mib * MIB) if g.memory_total_mib is not None else None,
                power_w=num("power_w"), temperature_c=num("temperature_c"),
                ecc_corrected=int(num("ecc_corrected")) if s["ecc_corrected"] else None,
                ecc_uncorrected=int(num("ecc_uncorrected")) if s["ecc_uncorrected"] else None,
                xid_errors=g.xid.get(t, ()), processes=tuple(procs)))
        return out

    def cgroup(self, pid: int) -> str | None:
        return self._cgroups.get(pid)

    def allocations(self) -> dict[str, PodRef]:
        """GPU UUID -> the pod the kubelet allocated it to (what the pod-resources API answers)."""
        return {g.uuid: self.sim.pods[g.allocated_to] for g in self.sim.gpus if g.allocated_to in self.sim.pods}

    def close(self) -> None:
        pass
