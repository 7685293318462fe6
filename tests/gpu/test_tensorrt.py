"""The TensorRT backend on a real GPU (skipped without one, tensorrt and cuda-python).

Engines are built at test time from a small ONNX model with TensorRT's own builder, then
served through the repository loader (auto-complete from the engine) and the backend, and
compared with ONNX Runtime on the CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from volley.backends import BackendInspector
from volley.backends.devices import cuda_device_count
from volley.errors import ConfigError
from volley.memory.probe import CudaProbe
from volley.repository.loader import LoadedConfig, load_model_config

from onnx_models import make_model_dir

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        cuda_device_count() == 0
        or importlib.util.find_spec("tensorrt") is None
        or importlib.util.find_spec("cuda") is None,
        reason="needs a CUDA GPU, tensorrt and cuda-python (the tensorrt extra)",
    ),
]

WIDTH, CLASSES = 16, 8
#: Two optimisation profiles: batches 1..4 and 5..16.
PROFILES = [((1, WIDTH), (2, WIDTH), (4, WIDTH)), ((5, WIDTH), (8, WIDTH), (16, WIDTH))]


def dense_onnx() -> onnx.ModelProto:
    """``Y = relu(X @ W + b)`` over FP32 ``[N, 16] -> [N, 8]``."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((WIDTH, CLASSES)).astype(np.float32)
    bias = rng.standard_normal(CLASSES).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["Y"]),
        ],
        "dense",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def build_engine(model: onnx.ModelProto) -> bytes:
    """A serialised engine with ``PROFILES``, FP32 without TF32 (to compare closely)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString()), [
        str(parser.get_error(i)) for i in range(parser.num_errors)
    ]
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)
    for low, opt, high in PROFILES:
        profile = builder.create_optimization_profile()
        profile.set_shape("X", low, opt, high)
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    return bytes(plan)


@pytest.fixture(scope="module")
def engine() -> tuple[onnx.ModelProto, bytes]:
    model = dense_onnx()
    return model, build_engine(model)


def load(tmp_path: Path, plan: bytes, config: str = "") -> LoadedConfig:
    model_dir = make_model_dir(tmp_path, "dense_trt", plan, config=config, filename="model.plan")
    return load_model_config(
        model_dir, BackendInspector().read_signature, gpu_count=cuda_device_count()
    )


def test_autocomplete_reads_the_engine(tmp_path: Path, engine: tuple[Any, bytes]) -> None:
    loaded = load(tmp_path, engine[1])
    assert loaded.config.max_batch_size == 16
    assert [(t.name, list(t.dims)) for t in loaded.config.input] == [("X", [WIDTH])]
    assert [(t.name, list(t.dims)) for t in loaded.config.output] == [("Y", [CLASSES])]


def test_matches_onnx_runtime_in_both_profiles(tmp_path: Path, engine: tuple[Any, bytes]) -> None:
    from volley.backends.tensorrt import TensorRTBackend

    model, plan = engine
    loaded = load(tmp_path, plan, "instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]")
    result = TensorRTBackend().load(loaded.spec, loaded.versions[1])
    cpu = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    try:
        assert len(result.instances) == 2
        for batch in (1, 3, 12, 16, 2):
            x = rng.standard_normal((batch, WIDTH)).astype(np.float32)
            expected = cpu.run(["Y"], {"X": x})[0]
            for instance in result.instances:
                y = instance.execute({"X": x})["Y"]
                np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    finally:
        result.close()


def test_close_returns_the_gpu_memory(tmp_path: Path, engine: tuple[Any, bytes]) -> None:
    from volley.backends.tensorrt import TensorRTBackend

    loaded = load(tmp_path, engine[1], "instance_group [ { count: 4 kind: KIND_GPU gpus: [ 0 ] } ]")
    probe = CudaProbe()
    x = np.ones((16, WIDTH), np.float32)
    TensorRTBackend().load(loaded.spec, loaded.versions[1]).close()  # CUDA and TensorRT set-up
    baseline = probe.used_bytes("gpu0")
    for _ in range(3):
        result = TensorRTBackend().load(loaded.spec, loaded.versions[1])
        for instance in result.instances:
            instance.execute({"X": x})
        result.close()
    assert probe.used_bytes("gpu0") - baseline < 16 * 1024**2


def test_an_unreadable_plan_names_the_tensorrt_version(tmp_path: Path) -> None:
    import tensorrt as trt

    version = ".".join(trt.__version__.split(".")[:2])
    with pytest.raises(ConfigError, match=f"could not be deserialised by TensorRT {version}"):
        load(tmp_path, b"not an engine" * 64)
