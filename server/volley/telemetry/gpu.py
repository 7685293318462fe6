"""GPU metrics under Triton's names (``nv_gpu_*``, ``nv_energy_consumption``), read through NVML.

NVML comes from NVIDIA's ``nvidia-ml-py`` package (module ``pynvml``, in the ``gpu`` extra),
imported only when GPU metrics are asked for. Without the package, or without a driver,
``GpuMetrics`` is disabled and exports nothing. A reading NVML refuses for one device omits that
one sample; nothing NVML raises reaches a scrape. Readings are kept for ``max_age`` seconds so
that frequent scrapes do not query the driver each time.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from prometheus_client.core import Metric

log = logging.getLogger("volley.telemetry")

_T = TypeVar("_T")


class Nvml(Protocol):
    """The part of ``pynvml`` that GPU metrics use (a fake with these functions stands in)."""

    def nvmlInit(self) -> None:
        """Start NVML (raises without a driver)."""

    def nvmlShutdown(self) -> None:
        """Release NVML."""

    def nvmlDeviceGetCount(self) -> int:
        """Number of GPUs NVML sees."""

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        """The device handle of GPU ``index``."""

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        """The GPU's UUID (``GPU-...``)."""

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        """Utilisation over the last sample period, in percent (``.gpu``, ``.memory``)."""

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        """Framebuffer memory in bytes (``.total``, ``.used``, ``.free``)."""

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        """Power draw in milliwatts."""

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        """Power management limit in milliwatts."""

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        """Energy consumed since the driver was loaded, in millijoules."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU's values at one moment; ``None`` where NVML could not read that value."""

    uuid: str
    #: Fraction of the sample period a kernel was running, 0.0 to 1.0.
    utilization: float | None = None
    memory_total_bytes: float | None = None
    memory_used_bytes: float | None = None
    power_usage_watts: float | None = None
    power_limit_watts: float | None = None
    #: Energy consumed since GPU metrics started, in joules.
    energy_joules: float | None = None


@dataclass(slots=True)
class _Device:
    handle: Any
    uuid: str
    #: The driver's energy counter at the last successful read, in millijoules.
    last_energy_mj: int | None = None
    #: Energy accumulated since GPU metrics started, in joules.
    energy_joules: float = 0.0


#: (name, help, type, value) of each family, with Triton's names and help texts.
_FAMILIES: tuple[tuple[str, str, str, Callable[[GpuReading], float | None]], ...] = (
    (
        "nv_gpu_utilization",
        "GPU utilization rate [0.0 - 1.0)",
        "gauge",
        lambda r: r.utilization,
    ),
    (
        "nv_gpu_memory_total_bytes",
        "GPU total memory, in bytes",
        "gauge",
        lambda r: r.memory_total_bytes,
    ),
    (
        "nv_gpu_memory_used_bytes",
        "GPU used memory, in bytes",
        "gauge",
        lambda r: r.memory_used_bytes,
    ),
    ("nv_gpu_power_usage", "GPU power usage in watts", "gauge", lambda r: r.power_usage_watts),
    (
        "nv_gpu_power_limit",
        "GPU power management limit in watts",
        "gauge",
        lambda r: r.power_limit_watts,
    ),
    (
        "nv_energy_consumption",
        "GPU energy consumption in joules since the server started",
        "counter",
        lambda r: r.energy_joules,
    ),
)


def _import_nvml() -> Nvml | None:
    try:
        return cast(Nvml, importlib.import_module("pynvml"))
    except ImportError:
        log.info("GPU metrics off: nvidia-ml-py (pynvml) is not installed")
        return None


class GpuMetrics:
    """Per-GPU utilisation, memory, power and energy from NVML, as Prometheus families.

    ``nvml`` is the NVML module; by default ``pynvml`` is imported. NVML is started once here
    and released by :meth:`close`. :meth:`read` is safe to call from several threads.
    """

    def __init__(
        self,
        nvml: Nvml | None = None,
        *,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._nvml: Nvml | None = None
        self._devices: list[_Device] = []
        self._readings: list[GpuReading] = []
        self._read_at: float | None = None
        self._failed: set[tuple[str, str]] = set()
        module = nvml if nvml is not None else _import_nvml()
        if module is None:
            return
        try:
            module.nvmlInit()
        except Exception as exc:
            log.info("GPU metrics off: NVML did not start (%s)", exc)
            return
        devices = self._enumerate(module)
        if not devices:
            log.info("GPU metrics off: NVML found no GPU")
            self._shutdown(module)
            return
        self._nvml = module
        self._devices = devices
        log.info("GPU metrics on for %d GPU(s)", len(devices))

    @property
    def enabled(self) -> bool:
        """Whether NVML started and found at least one GPU (and :meth:`close` was not called)."""
        return self._nvml is not None

    @property
    def uuids(self) -> list[str]:
        """UUIDs of the GPUs reported, in NVML's order."""
        return [device.uuid for device in self._devices]

    def _enumerate(self, nvml: Nvml) -> list[_Device]:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            log.warning("GPU metrics: NVML could not count the GPUs (%s)", exc)
            return []
        devices = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
            except Exception as exc:
                log.warning("GPU metrics: NVML could not open GPU %d (%s); skipped", index, exc)
                continue
            if isinstance(uuid, bytes):
                uuid = uuid.decode("ascii", "replace")
            device = _Device(handle, uuid)
            self._energy(nvml, device)
            devices.append(device)
        return devices

    def read(self) -> list[GpuReading]:
        """Each GPU's values, read again when the last reading is ``max_age`` seconds old."""
        with self._lock:
            nvml = self._nvml
            if nvml is None:
                return []
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._max_age:
                return self._readings
            self._readings = [self._read_device(nvml, device) for device in self._devices]
            self._read_at = now
            return self._readings

    def collect(self) -> Iterator[Metric]:
        """The metric families, labelled ``gpu_uuid``; a family no GPU could read is left out."""
        readings = self.read()
        if not readings:
            return
        for name, doc, kind, value_of in _FAMILIES:
            family = Metric(name, doc, kind)
            for reading in readings:
                value = value_of(reading)
                if value is not None:
                    family.add_sample(name, {"gpu_uuid": reading.uuid}, value)
            if family.samples:
                yield family

    def close(self) -> None:
        """Release NVML; afterwards nothing is exported. Calling it again does nothing."""
        with self._lock:
            nvml, self._nvml = self._nvml, None
            self._devices = []
            self._readings = []
            self._read_at = None
        if nvml is not None:
            self._shutdown(nvml)

    @staticmethod
    def _shutdown(nvml: Nvml) -> None:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("NVML shutdown failed: %s", exc)

    def _read_device(self, nvml: Nvml, device: _Device) -> GpuReading:
        handle = device.handle
        utilization = self._call(
            device, "utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        )
        memory = self._call(device, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        total = used = None
        if memory is not None:
            total = self._call(device, "memory total", lambda: float(memory.total))
            used = self._call(device, "memory used", lambda: float(memory.used))
        power = self._call(
            device, "power usage", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        )
        limit = self._call(
            device,
            "power limit",
            lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0,
        )
        return GpuReading(
            uuid=device.uuid,
            utilization=utilization,
            memory_total_bytes=total,
            memory_used_bytes=used,
            power_usage_watts=power,
            power_limit_watts=limit,
            energy_joules=self._energy(nvml, device),
        )

    def _energy(self, nvml: Nvml, device: _Device) -> float | None:
        """Add the driver's energy counter's increase since the last read; the total in joules.

        The first successful read only sets the starting point, so the total counts from when
        GPU metrics started. If the driver's counter goes back (it restarted), nothing is added
        and counting goes on from the new value, so the exported counter never decreases.
        """
        current = self._call(
            device, "energy", lambda: int(nvml.nvmlDeviceGetTotalEnergyConsumption(device.handle))
        )
        if current is None:
            return None
        last = device.last_energy_mj
        if last is not None and current >= last:
            device.energy_joules += (current - last) / 1000.0
        device.last_energy_mj = current
        return device.energy_joules

    def _call(self, device: _Device, what: str, read: Callable[[], _T]) -> _T | None:
        """``read()``, or ``None`` if it raised: logged once per GPU and value, then quietly."""
        try:
            return read()
        except Exception as exc:
            key = (device.uuid, what)
            if key not in self._failed:
                self._failed.add(key)
                log.info("GPU metrics: could not read %s of %s (%s)", what, device.uuid, exc)
            else:
                log.debug("GPU metrics: could not read %s of %s (%s)", what, device.uuid, exc)
            return None
