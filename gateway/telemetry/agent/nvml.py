"""The NVML boundary: what the agent reads from each GPU, and the production reader over pynvml.

`DeviceSource` is all the agent needs from NVML: a `GpuSample` per GPU (the one type of a GPU
reading, gateway.telemetry.samples), not yet stamped with node and time; `PynvmlSource` implements it on a real
driver and `gateway.telemetry.agent.simulate.ScriptedSource` from a scripted device table. pynvml's
exceptions stop here: a GPU NVML cannot read (`GPU is lost`) becomes a reading with `error`
set, a metric the GPU does not support becomes None, and a missing or failing driver raises
`NvmlUnavailable` with the reason, which the agent logs and retries on its next tick.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, TypeVar

from gateway.telemetry.samples import GpuProcess, GpuSample

log = logging.getLogger("gateway.agent")

_T = TypeVar("_T")


class NvmlUnavailable(Exception):
    """NVML cannot be used at all (no driver, library missing, driver failing)."""


class DeviceSource(Protocol):
    def read(self) -> list[GpuSample]:
        """One reading of every GPU. Raises NvmlUnavailable when NVML cannot be used."""
        ...

    def close(self) -> None: ...


def _import_pynvml() -> Any:
    with warnings.catch_warnings():  # the `pynvml` shim package warns that it is deprecated
        warnings.simplefilter("ignore")
        import pynvml
    return pynvml


class PynvmlSource:
    """GPUs through NVML (the `nvidia-ml-py` bindings). Thread-safe; initialises NVML lazily."""

    def __init__(self) -> None:
        self._nv = _import_pynvml()
        self._lock = threading.Lock()
        self._ready = False
        self._events: Any = None
        self._uuids: dict[int, str] = {}

    def _init(self) -> None:
        nv = self._nv
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            raise NvmlUnavailable(f"NVML cannot start: {_describe(nv, exc)}") from None
        self._ready = True
        try:  # XID events are optional (not every GPU or driver supports them)
            self._events = nv.nvmlEventSetCreate()
            for i in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                try:
                    nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, self._events)
                except nv.NVMLError as exc:
                    log.info("GPU %d: XID events unavailable: %s", i, _describe(nv, exc))
        except nv.NVMLError as exc:
            log.info("XID events unavailable: %s", _describe(nv, exc))
            self._events = None

    def read(self) -> list[GpuSample]:
        nv = self._nv
        with self._lock:
            if not self._ready:
                self._init()
            try:
                count = nv.nvmlDeviceGetCount()
            except nv.NVMLError as exc:
                self._shutdown()
                raise NvmlUnavailable(f"NVML cannot count GPUs: {_describe(nv, exc)}") from None
            xids = self._drain_xids()
            return [self._device(i, xids) for i in range(count)]

    def _drain_xids(self) -> dict[str, list[int]]:
        """XID events since the last read, per GPU UUID (non-blocking)."""
        nv = self._nv
        out: dict[str, list[int]] = {}
        if self._events is None:
            return {}
        for _ in range(1000):
            try:
                data = nv.nvmlEventSetWait_v2(self._events, 0)
            except nv.NVMLError:  # Timeout: nothing pending (or the set failed: try next time)
                break
            try:
                uuid = _text(nv.nvmlDeviceGetUUID(data.device))
            except nv.NVMLError:
                continue
            out.setdefault(uuid, []).append(int(data.eventData))
        return out

    def _device(self, index: int, xids: dict[str, list[int]]) -> GpuSample:
        nv = self._nv
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
        except nv.NVMLError as exc:
            return GpuSample(index=index, uuid=self._uuids.get(index, f"index-{index}"), error=_describe(nv, exc))
        self._uuids[index] = uuid

        def optional(call: Callable[[], _T]) -> _T | None:
            try:
                return call()
            except nv.NVMLError_GpuIsLost:
                raise
            except nv.NVMLError:
                return None

        try:
            memory = optional(lambda: nv.nvmlDeviceGetMemoryInfo(handle))
            util = optional(lambda: nv.nvmlDeviceGetUtilizationRates(handle))
            power = optional(lambda: nv.nvmlDeviceGetPowerUsage(handle))
            procs = optional(lambda: nv.nvmlDeviceGetComputeRunningProcesses(handle)) or []
            ecc = [optional(partial(nv.nvmlDeviceGetTotalEccErrors, handle, kind, nv.NVML_VOLATILE_ECC))
                   for kind in (nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)]
            return GpuSample(
                index=index, uuid=uuid, model=_text(optional(lambda: nv.nvmlDeviceGetName(handle)) or ""),
                utilization=float(util.gpu) if util is not None else None,
                memory_used_bytes=int(memory.used) if memory is not None else None,
                memory_total_bytes=int(memory.total) if memory is not None else None,
                power_w=power / 1000.0 if power is not None else None,
                temperature_c=optional(lambda: float(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))),
                ecc_corrected=ecc[0], ecc_uncorrected=ecc[1],
                xid_errors=tuple(xids.get(uuid, ())),
                processes=tuple(GpuProcess(int(p.pid), int(p.usedGpuMemory or 0)) for p in procs),
            )
        except nv.NVMLError as exc:
            return GpuSample(index=index, uuid=uuid, error=_describe(nv, exc), xid_errors=tuple(xids.get(uuid, ())))

    def _shutdown(self) -> None:
        if self._ready:
            try:
                if self._events is not None:
                    self._nv.nvmlEventSetFree(self._events)
                self._nv.nvmlShutdown()
            except self._nv.NVMLError:
                pass
        self._ready, self._events = False, None

    def close(self) -> None:
        with self._lock:
            self._shutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(nv: Any, exc: Exception) -> str:
    """pynvml's error in words, with what to check for the common ones."""
    text = str(exc)
    if isinstance(exc, nv.NVMLError_LibraryNotFound):
        return f"{text}: libnvidia-ml.so.1 not found (is the NVIDIA driver installed and mounted?)"
    if isinstance(exc, nv.NVMLError_DriverNotLoaded):
        return f"{text}: the NVIDIA kernel driver is not loaded"
    if isinstance(exc, nv.NVMLError_GpuIsLost):
        return "GPU is lost (fell off the bus or needs a reset)"
    return text
