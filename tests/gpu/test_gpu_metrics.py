"""GPU metrics from the real NVML (skipped without a GPU and nvidia-ml-py)."""

from __future__ import annotations

import importlib.util

import pytest

from volley.backends.devices import cuda_device_count
from volley.telemetry.gpu import GpuMetrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        cuda_device_count() == 0 or importlib.util.find_spec("pynvml") is None,
        reason="needs a CUDA GPU and nvidia-ml-py (the gpu extra)",
    ),
]


def test_each_gpu_reports_its_memory() -> None:
    gpu = GpuMetrics()
    try:
        assert gpu.enabled
        readings = gpu.read()
        assert readings and [r.uuid for r in readings] == gpu.uuids
        for reading in readings:
            assert reading.uuid.startswith(("GPU-", "MIG-"))
            assert reading.memory_total_bytes is not None and reading.memory_total_bytes > 0
            assert reading.memory_used_bytes is not None
            assert 0 <= reading.memory_used_bytes <= reading.memory_total_bytes
            if reading.utilization is not None:
                assert 0.0 <= reading.utilization <= 1.0
        names = {family.name for family in gpu.collect()}
        assert {"nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes"} <= names
    finally:
        gpu.close()
    assert not gpu.enabled
