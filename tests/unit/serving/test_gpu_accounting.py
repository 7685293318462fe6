"""GPU memory accounting through the probe seam: a fake backend and a fake CUDA probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from volley.backends.base import Backend, LoadedModel, ModelInstance
from volley.errors import ResourceExhausted
from volley.memory.manager import MemoryManager
from volley.memory.probe import HostProbe, Probes
from volley.model.spec import ModelSpec
from volley.serving import lifecycle
from volley.serving.lifecycle import ModelManager
from volley.serving.registry import Registry

from onnx_models import identity, make_model_dir

MB = 1024**2
GPU_CONFIG = """backend: "onnxruntime"
max_batch_size: 8
instance_group [ { count: 1 kind: KIND_GPU gpus: [ 0 ] } ]
"""


class FakeGpu:
    """A GPU whose used memory grows by what the fake backend allocates."""

    def __init__(self) -> None:
        self.used = 500 * MB
        self.readings: list[str] = []

    def used_bytes(self, device: str) -> int:
        self.readings.append(device)
        return self.used

    def settle(self, device: str) -> None:
        return None


class Instance(ModelInstance):
    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"]}


class FakeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, gpu: FakeGpu, sizes: dict[str, int]) -> None:
        self.gpu = gpu
        self.sizes = sizes

    def load(self, spec: ModelSpec, model_path: Path) -> LoadedModel:
        self.gpu.used += self.sizes[spec.name]
        gpu = self.gpu
        size = self.sizes[spec.name]

        class Loaded(LoadedModel):
            def close(self) -> None:
                gpu.used -= size
                super().close()

        return Loaded(instances=[Instance()])


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    fake = FakeGpu()
    backend = FakeBackend(fake, {"a": 300 * MB, "b": 300 * MB, "huge": 5000 * MB})
    monkeypatch.setattr(lifecycle, "get_backend", lambda name: backend)
    return fake


def manager(repo: Path, gpu: FakeGpu, budget_mb: int) -> ModelManager:
    return ModelManager(
        [repo],
        Registry(),
        gpu_count=1,
        memory=MemoryManager({"gpu0": budget_mb * MB}, min_residency_s=0),
        probes=Probes(host_probe=HostProbe(), gpu=gpu),
    )


async def test_gpu_footprints_are_measured_and_evicted_lru(tmp_path: Path, gpu: FakeGpu) -> None:
    for name in ("a", "b"):
        make_model_dir(tmp_path, name, identity(), config=GPU_CONFIG)
    m = manager(tmp_path, gpu, budget_mb=400)
    try:
        await m.load("a")
        mv = m.registry.get("a").versions[1]  # type: ignore[union-attr]
        assert mv.stats.memory_bytes[("GPU", 0)] == 300 * MB
        assert "gpu0" in gpu.readings
        assert m.memory is not None and m.memory.held("gpu0") == 300 * MB
        await m.load("b")  # does not fit beside a: a is evicted first
        assert m.registry.get("a").evicted  # type: ignore[union-attr]
        assert m.memory.held("gpu0") == 300 * MB
        assert gpu.used == 800 * MB  # 500 used by others + b
        assert m.stats.evictions == 1
    finally:
        await m.shutdown()


async def test_a_gpu_model_larger_than_the_budget_is_refused(tmp_path: Path, gpu: FakeGpu) -> None:
    make_model_dir(tmp_path, "huge", identity(), config=GPU_CONFIG)
    m = manager(tmp_path, gpu, budget_mb=1000)
    try:
        with pytest.raises(ResourceExhausted, match="huge"):
            await m.load("huge")
        assert gpu.used == 500 * MB  # measured, refused, and unloaded again
    finally:
        await m.shutdown()
