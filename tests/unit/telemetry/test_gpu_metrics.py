"""GPU metrics: Triton's ``nv_gpu_*`` names and units from NVML, through a fake NVML module."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from volley.telemetry.gpu import GpuMetrics
from volley.telemetry.metrics import VolleyCollector, exposition
from volley.telemetry.stats import ServerStats

UUIDS = ("GPU-8d2e1f3a-0000-1111-2222-333344445555", "GPU-5c9b7a61-6666-7777-8888-999900001111")


class FakeNVMLError(Exception):
    """What pynvml raises (``pynvml.NVMLError``)."""


class FakeNvml:
    """Two GPUs as NVML reports them: percent, bytes, milliwatts, millijoules.

    ``fail`` holds ``(function name, device index)`` pairs that raise; every call is counted.
    """

    def __init__(self, *, init_error: Exception | None = None, count: int = 2) -> None:
        self.init_error = init_error
        self.count = count
        self.calls: Counter[str] = Counter()
        self.fail: set[tuple[str, int]] = set()
        self.utilization = [75, 3]
        self.memory = [(80 * 1024**3, 12 * 1024**3), (16 * 1024**3, 1024**2)]
        self.power_mw = [123_456, 61_000]
        self.limit_mw = [300_000, 250_500]
        self.energy_mj = [1_000_000, 5_000]

    def _call(self, name: str, index: int) -> None:
        self.calls[name] += 1
        if (name, index) in self.fail:
            raise FakeNVMLError(f"{name} failed on GPU {index}")

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1

    def nvmlDeviceGetCount(self) -> int:
        self.calls["nvmlDeviceGetCount"] += 1
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._call("nvmlDeviceGetHandleByIndex", index)
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:
        self._call("nvmlDeviceGetUUID", handle)
        # older pynvml releases return bytes
        return UUIDS[handle] if handle == 0 else UUIDS[handle].encode()

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._call("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=self.utilization[handle], memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        self._call("nvmlDeviceGetMemoryInfo", handle)
        total, used = self.memory[handle]
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self._call("nvmlDeviceGetPowerUsage", handle)
        return self.power_mw[handle]

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        self._call("nvmlDeviceGetPowerManagementLimit", handle)
        return self.limit_mw[handle]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self._call("nvmlDeviceGetTotalEnergyConsumption", handle)
        return self.energy_mj[handle]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scrape(gpu: GpuMetrics | None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VolleyCollector(lambda: [], ServerStats(), {"grpc": "native"}, gpu))
    return exposition(registry).decode()


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every GPU sample in an exposition."""
    found = {}
    for line in text.splitlines():
        if line.startswith(("nv_gpu_", "nv_energy_")):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found


def key(name: str, gpu: int) -> str:
    return f'{name}{{gpu_uuid="{UUIDS[gpu]}"}}'


def test_names_labels_values_and_units() -> None:
    nvml = FakeNvml()
    gpu = GpuMetrics(nvml, clock=Clock())
    assert gpu.enabled and gpu.uuids == list(UUIDS)
    nvml.energy_mj = [1_250_500, 5_000]
    text = scrape(gpu)
    assert samples(text) == {
        key("nv_gpu_utilization", 0): 0.75,
        key("nv_gpu_utilization", 1): 0.03,
        key("nv_gpu_memory_total_bytes", 0): 80 * 1024**3,
        key("nv_gpu_memory_total_bytes", 1): 16 * 1024**3,
        key("nv_gpu_memory_used_bytes", 0): 12 * 1024**3,
        key("nv_gpu_memory_used_bytes", 1): 1024**2,
        key("nv_gpu_power_usage", 0): 123.456,
        key("nv_gpu_power_usage", 1): 61.0,
        key("nv_gpu_power_limit", 0): 300.0,
        key("nv_gpu_power_limit", 1): 250.5,
        # joules consumed since metrics started, not since the driver loaded
        key("nv_energy_consumption", 0): 250.5,
        key("nv_energy_consumption", 1): 0.0,
    }
    for name, kind, doc in (
        ("nv_gpu_utilization", "gauge", "GPU utilization rate [0.0 - 1.0)"),
        ("nv_gpu_memory_total_bytes", "gauge", "GPU total memory, in bytes"),
        ("nv_gpu_memory_used_bytes", "gauge", "GPU used memory, in bytes"),
        ("nv_gpu_power_usage", "gauge", "GPU power usage in watts"),
        ("nv_gpu_power_limit", "gauge", "GPU power management limit in watts"),
        (
            "nv_energy_consumption",
            "counter",
            "GPU energy consumption in joules since the server started",
        ),
    ):
        assert f"# HELP {name} {doc}\n" in text
        assert f"# TYPE {name} {kind}\n" in text
    assert "nv_energy_consumption_total" not in text


def test_energy_counter_accumulates_and_never_decreases() -> None:
    nvml = FakeNvml()
    clock = Clock()
    gpu = GpuMetrics(nvml, clock=clock)
    totals = []
    for energy in (1_002_000, 1_003_500, 10, 510):
        nvml.energy_mj[0] = energy
        clock.now += 2
        totals.append(samples(scrape(gpu))[key("nv_energy_consumption", 0)])
    # the driver's counter went back to 10 mJ (it restarted): counting goes on from there
    assert totals == [2.0, 3.5, 3.5, 4.0]


def test_energy_counts_from_the_first_reading_when_the_start_reading_failed() -> None:
    nvml = FakeNvml()
    nvml.fail.add(("nvmlDeviceGetTotalEnergyConsumption", 0))
    clock = Clock()
    gpu = GpuMetrics(nvml, clock=clock)
    assert key("nv_energy_consumption", 0) not in samples(scrape(gpu))
    nvml.fail.clear()
    clock.now += 2
    assert samples(scrape(gpu))[key("nv_energy_consumption", 0)] == 0.0
    nvml.energy_mj[0] += 4_000
    clock.now += 2
    assert samples(scrape(gpu))[key("nv_energy_consumption", 0)] == 4.0


def test_a_failing_reading_omits_only_that_sample(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml()
    nvml.fail.add(("nvmlDeviceGetPowerUsage", 1))
    nvml.fail.add(("nvmlDeviceGetUtilizationRates", 0))
    gpu = GpuMetrics(nvml, clock=Clock())
    with caplog.at_level(logging.DEBUG, logger="volley.telemetry"):
        found = samples(scrape(gpu))
    assert len(found) == 10
    assert key("nv_gpu_power_usage", 1) not in found
    assert key("nv_gpu_utilization", 0) not in found
    assert found[key("nv_gpu_power_usage", 0)] == 123.456
    assert found[key("nv_gpu_utilization", 1)] == 0.03
    assert found[key("nv_gpu_power_limit", 1)] == 250.5
    assert f"could not read power usage of {UUIDS[1]}" in caplog.text


def test_a_family_no_gpu_can_read_is_left_out() -> None:
    nvml = FakeNvml()
    nvml.fail |= {
        ("nvmlDeviceGetPowerManagementLimit", 0),
        ("nvmlDeviceGetPowerManagementLimit", 1),
    }
    text = scrape(GpuMetrics(nvml, clock=Clock()))
    assert "nv_gpu_power_limit" not in text
    assert key("nv_gpu_power_usage", 0) in samples(text)


def test_a_gpu_nvml_cannot_open_is_skipped() -> None:
    nvml = FakeNvml()
    nvml.fail.add(("nvmlDeviceGetUUID", 0))
    gpu = GpuMetrics(nvml, clock=Clock())
    assert gpu.uuids == [UUIDS[1]]
    found = samples(scrape(gpu))
    assert len(found) == 6
    assert all(UUIDS[1] in name for name in found)


def test_missing_driver_exports_nothing() -> None:
    nvml = FakeNvml(init_error=FakeNVMLError("NVML Shared Library Not Found"))
    gpu = GpuMetrics(nvml, clock=Clock())
    assert not gpu.enabled
    assert gpu.read() == []
    text = scrape(gpu)
    assert "nv_gpu_" not in text and "nv_energy_" not in text
    gpu.close()
    assert set(nvml.calls) == {"nvmlInit"}


def test_no_gpu_exports_nothing_and_releases_nvml() -> None:
    nvml = FakeNvml(count=0)
    gpu = GpuMetrics(nvml, clock=Clock())
    assert not gpu.enabled
    assert "nv_gpu_" not in scrape(gpu)
    assert nvml.calls["nvmlShutdown"] == 1


def test_missing_pynvml_exports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    gpu = GpuMetrics()
    assert not gpu.enabled
    text = scrape(gpu)
    assert "nv_gpu_" not in text and "nv_energy_" not in text
    gpu.close()


def test_readings_are_cached_for_max_age() -> None:
    nvml = FakeNvml()
    clock = Clock()
    gpu = GpuMetrics(nvml, clock=clock, max_age=1.0)
    first = samples(scrape(gpu))
    nvml.power_mw[0] = 200_000
    clock.now += 0.5
    for _ in range(5):
        assert samples(scrape(gpu)) == first
    assert nvml.calls["nvmlDeviceGetPowerUsage"] == 2  # one reading per GPU
    assert nvml.calls["nvmlDeviceGetMemoryInfo"] == 2
    clock.now += 0.6
    assert samples(scrape(gpu))[key("nv_gpu_power_usage", 0)] == 200.0
    assert nvml.calls["nvmlDeviceGetPowerUsage"] == 4


def test_close_shuts_nvml_down_once_and_stops_exporting() -> None:
    nvml = FakeNvml()
    gpu = GpuMetrics(nvml, clock=Clock())
    assert samples(scrape(gpu))
    gpu.close()
    gpu.close()
    assert nvml.calls["nvmlShutdown"] == 1
    assert not gpu.enabled
    assert "nv_gpu_" not in scrape(gpu)


def test_without_gpu_metrics_the_collector_exports_none() -> None:
    assert "nv_gpu_" not in scrape(None)
