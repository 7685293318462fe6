"""GPU instances through ONNX Runtime's CUDA provider (skipped without a CUDA GPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from volley.backends import BackendInspector
from volley.backends.devices import cuda_device_count
from volley.repository.loader import load_model_config

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        cuda_device_count() == 0 or "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="needs a CUDA GPU and onnxruntime-gpu",
    ),
]


def test_gpu_instance_matches_cpu(tmp_path: Path) -> None:
    from volley.backends.onnxruntime import OnnxRuntimeBackend

    model = tmp_path / "dense_classifier"
    shutil.copytree(ROOT / "model_repository" / "dense_classifier", model)
    config = (model / "config.pbtxt").read_text().replace("KIND_CPU", "KIND_GPU")
    (model / "config.pbtxt").write_text(config)
    loaded = load_model_config(
        model, BackendInspector().read_signature, gpu_count=cuda_device_count()
    )
    assert loaded.spec.instance_kind == "GPU"
    instances = OnnxRuntimeBackend().load(loaded.spec, loaded.versions[1]).instances
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    cpu = ort.InferenceSession(str(loaded.versions[1]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        instances[0].execute({"INPUT": x})["LOGITS"], cpu.run(["LOGITS"], {"INPUT": x})[0],
        rtol=1e-3, atol=1e-4,
    )  # fmt: skip


async def test_gpu_memory_is_measured_and_budgeted(tmp_path: Path) -> None:
    from volley.memory.manager import MemoryManager
    from volley.serving.lifecycle import ModelManager
    from volley.serving.registry import Registry

    model = tmp_path / "dense_classifier"
    shutil.copytree(ROOT / "model_repository" / "dense_classifier", model)
    config = (model / "config.pbtxt").read_text().replace("KIND_CPU", "KIND_GPU")
    (model / "config.pbtxt").write_text(config)
    manager = ModelManager(
        [tmp_path],
        Registry(),
        gpu_count=cuda_device_count(),
        memory=MemoryManager({"gpu0": 8 * 1024**3}),
    )
    try:
        await manager.load("dense_classifier")
        entry = manager.registry.get("dense_classifier")
        assert entry is not None and entry.default is not None
        used = entry.default.stats.memory_bytes[("GPU", 0)]
        assert used > 0
        assert manager.memory is not None and manager.memory.held("gpu0") == used
    finally:
        await manager.shutdown()
