"""The TensorRT backend against fake ``tensorrt`` and ``cudart`` modules (no GPU needed).

The fakes (tests/helpers/fake_tensorrt.py) emulate TensorRT 10's engine and context API and
cuda-python's runtime calls, keep device memory as numpy bytes, run stream work in order when
the stream is synchronised, and compute outputs with numpy; every call is logged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import (
    NUMPY,
    DataType,
    EngineSpec,
    FakeGpu,
    cudaError_t,
    tensor_in,
    tensor_out,
)

from volley._proto.inference import model_config_pb2 as mc
from volley.backends import BackendInspector, get_backend
from volley.backends import tensorrt as trt_backend
from volley.backends.tensorrt import TensorRTBackend, TensorRTInstance
from volley.errors import ConfigError, InvalidArgument, ResourceExhausted
from volley.repository.loader import LoadedConfig, load_model_config

from onnx_models import make_model_dir

PLAN = b"fake engine: Y = X * 2"


def doubler(
    profiles: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...] = (
        ((1, 3), (4, 3), (8, 3)),
    ),
) -> EngineSpec:
    """``Y = X * 2`` over FP32 ``[-1, 3]``, one (min, opt, max) per profile."""
    return EngineSpec(
        [tensor_in("X", (-1, 3), profiles), tensor_out("Y", (-1, 3))],
        lambda inputs: {"Y": inputs["X"] * 2},
        num_profiles=len(profiles),
    )


#: Two profiles: batches 1..4 and 5..16.
TWO_PROFILES = (((1, 3), (2, 3), (4, 3)), ((5, 3), (8, 3), (16, 3)))


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    fake = FakeGpu(device_count=2)
    monkeypatch.setattr(trt_backend, "_modules", fake.modules)
    return fake


def model(
    tmp_path: Path,
    gpu: FakeGpu,
    spec: EngineSpec,
    config: str = "",
    *,
    plan: bytes = PLAN,
    gpu_count: int = 2,
) -> LoadedConfig:
    """A ``tensorrt_plan`` model folder holding ``plan`` (registered as ``spec``), loaded."""
    gpu.register(plan, spec)
    model_dir = make_model_dir(tmp_path, "trt", plan, config=config, filename="model.plan")
    return load_model_config(model_dir, BackendInspector().read_signature, gpu_count=gpu_count)


def instances(gpu: FakeGpu, loaded: LoadedConfig) -> list[TensorRTInstance]:
    """The loaded instances; the fake's logs then hold only what the load did."""
    gpu.calls.clear()
    gpu.engines.clear()
    gpu.contexts.clear()
    loaded_model = TensorRTBackend().load(loaded.spec, loaded.versions[1])
    found = [i for i in loaded_model.instances if isinstance(i, TensorRTInstance)]
    assert len(found) == len(loaded_model.instances)
    return found


X = np.arange(6, dtype=np.float32).reshape(2, 3)


# --- engine I/O discovery and auto-complete ------------------------------------------------


def test_get_backend_returns_the_tensorrt_backend() -> None:
    assert isinstance(get_backend("tensorrt"), TensorRTBackend)


def test_signature_maps_every_datatype(tmp_path: Path, gpu: FakeGpu) -> None:
    kinds = {
        DataType.FLOAT: "FP32",
        DataType.HALF: "FP16",
        DataType.BF16: "BF16",
        DataType.INT8: "INT8",
        DataType.INT32: "INT32",
        DataType.INT64: "INT64",
        DataType.BOOL: "BOOL",
        DataType.UINT8: "UINT8",
    }
    profile = (((1, 2), (1, 2), (4, 2)),)
    tensors = [tensor_in(f"in_{k.name}", (-1, 2), profile, k) for k in kinds]
    tensors += [tensor_out(f"out_{k.name}", (-1, 2), k) for k in kinds]
    gpu.register(PLAN, EngineSpec(tensors, lambda inputs: {}))
    (tmp_path / "model.plan").write_bytes(PLAN)
    io = TensorRTBackend().read_signature(tmp_path / "model.plan")
    assert io is not None
    assert [(t.name, t.datatype, t.shape) for t in io.inputs] == [
        (f"in_{k.name}", v, (-1, 2)) for k, v in kinds.items()
    ]
    assert [t.datatype for t in io.outputs] == list(kinds.values())
    assert io.max_batch_size == 4


@pytest.mark.parametrize("kind", [DataType.FP8, DataType.INT4])
def test_types_the_protocol_cannot_carry_are_refused(
    tmp_path: Path, gpu: FakeGpu, kind: DataType
) -> None:
    spec = EngineSpec(
        [tensor_in("X", (2,)), tensor_out("Y", (2,), kind)], lambda inputs: {"Y": inputs["X"]}
    )
    gpu.register(PLAN, spec)
    (tmp_path / "model.plan").write_bytes(PLAN)
    with pytest.raises(ConfigError, match=f"tensor 'Y' has type {kind.name}") as info:
        TensorRTBackend().read_signature(tmp_path / "model.plan")
    assert "FP32, FP16" in info.value.hint


def test_max_batch_size_is_tritons_rule_over_profiles(tmp_path: Path, gpu: FakeGpu) -> None:
    # per profile the smallest max first dim over the inputs (4, then 6); the largest of those
    a = tensor_in("A", (-1, 2), [((1, 2), (2, 2), (4, 2)), ((1, 2), (8, 2), (16, 2))])
    b = tensor_in("B", (-1,), [((1,), (2,), (8,)), ((1,), (4,), (6,))])
    spec = EngineSpec(
        [a, b, tensor_out("Y", (-1, 2))], lambda i: {"Y": i["A"] * i["B"][:, None]}, 2
    )
    gpu.register(PLAN, spec)
    (tmp_path / "model.plan").write_bytes(PLAN)
    io = TensorRTBackend().read_signature(tmp_path / "model.plan")
    assert io is not None and io.max_batch_size == 6


def test_engine_with_fixed_shapes_does_not_batch(tmp_path: Path, gpu: FakeGpu) -> None:
    spec = EngineSpec(
        [tensor_in("X", (2, 3)), tensor_out("Y", (2, 3))], lambda i: {"Y": i["X"] + 1}
    )
    loaded = model(tmp_path, gpu, spec)
    assert loaded.config.max_batch_size == 0
    assert [list(t.dims) for t in loaded.config.input] == [[2, 3]]
    assert not loaded.config.HasField("dynamic_batching")


def test_autocomplete_fills_a_tensorrt_model_folder(tmp_path: Path, gpu: FakeGpu) -> None:
    loaded = model(tmp_path, gpu, doubler())
    config = loaded.config
    assert (config.platform, config.backend) == ("tensorrt_plan", "tensorrt")
    assert config.max_batch_size == 8  # the profile's max, as Triton sets it
    assert config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("X", mc.TYPE_FP32, [3])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("Y", mc.TYPE_FP32, [3])
    ]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert loaded.spec.gpus == (0, 1)


def test_autocomplete_keeps_a_smaller_configured_max_batch_size(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    assert model(tmp_path, gpu, doubler(), "max_batch_size: 2").config.max_batch_size == 2


@pytest.mark.parametrize(
    "config",
    [
        "max_batch_size: 16",
        'max_batch_size: 16 input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ] '
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] } ]',
    ],
    ids=["completed", "configured"],
)
def test_max_batch_size_beyond_the_profile_is_refused(
    tmp_path: Path, gpu: FakeGpu, config: str
) -> None:
    with pytest.raises(ConfigError, match=r"max_batch_size is 16 .* at most 8") as info:
        model(tmp_path, gpu, doubler(), config)
    assert "max_batch_size: 8 or less" in info.value.hint
    assert info.value.path.endswith("config.pbtxt")


def test_load_refuses_an_engine_smaller_than_the_config(tmp_path: Path, gpu: FakeGpu) -> None:
    # auto-complete reads the latest version; an older version's engine is checked at load
    loaded = model(tmp_path, gpu, doubler(), "max_batch_size: 8")
    gpu.register(b"older", doubler((((1, 3), (2, 3), (4, 3)),)))
    older = tmp_path / "older.plan"
    older.write_bytes(b"older")
    with pytest.raises(ConfigError, match=r"max_batch_size is 8 .* at most 4"):
        TensorRTBackend().load(loaded.spec, older)
    assert gpu.live() == {"device": 0, "pinned": 0, "streams": 0}


# --- profiles and buffers ---------------------------------------------------------------------


def test_each_batch_runs_in_the_first_profile_that_holds_it(tmp_path: Path, gpu: FakeGpu) -> None:
    loaded = model(tmp_path, gpu, doubler(TWO_PROFILES), "instance_group [ { gpus: [ 0 ] } ]")
    assert loaded.config.max_batch_size == 16
    (inst,) = instances(gpu, loaded)
    context = gpu.contexts[-1].id
    gpu.calls.clear()
    for batch in (2, 10, 12, 4):
        x = np.ones((batch, 3), np.float32) * batch
        np.testing.assert_array_equal(inst.execute({"X": x})["Y"], x * 2)
    switches = [c[1] for c in gpu.named("set_optimization_profile_async") if c[0] == context]
    assert switches == [1, 0]  # starts in profile 0; switches only when the batch needs it


@pytest.mark.parametrize(
    ("shape", "why"), [((20, 3), "X=\\[20, 3\\]"), ((2, 5), "X=\\[2, 5\\]"), ((3,), "X=\\[3\\]")]
)
def test_no_profile_holds_the_batch(
    tmp_path: Path, gpu: FakeGpu, shape: tuple[int, ...], why: str
) -> None:
    (inst,) = instances(
        gpu, model(tmp_path, gpu, doubler(TWO_PROFILES), "instance_group [ { gpus: [ 0 ] } ]")
    )
    with pytest.raises(InvalidArgument, match=f"no optimisation profile .* {why}") as info:
        inst.execute({"X": np.zeros(shape, np.float32)})
    assert "profile 0: X [1, 3]..[4, 3]; profile 1: X [5, 3]..[16, 3]" in info.value.message
    np.testing.assert_array_equal(inst.execute({"X": X})["Y"], X * 2)  # still serves


def test_instance_group_profile_limits_the_profiles(tmp_path: Path, gpu: FakeGpu) -> None:
    config = 'instance_group [ { gpus: [ 0 ] profile: [ "1" ] } ]'
    (inst,) = instances(gpu, model(tmp_path, gpu, doubler(TWO_PROFILES), config))
    with pytest.raises(InvalidArgument, match="profile 1: X"):
        inst.execute({"X": X})  # batch 2 fits only profile 0, which this group does not use
    x = np.ones((6, 3), np.float32)
    np.testing.assert_array_equal(inst.execute({"X": x})["Y"], x * 2)


def test_instance_group_profile_must_exist(tmp_path: Path, gpu: FakeGpu) -> None:
    loaded = model(tmp_path, gpu, doubler(TWO_PROFILES), 'instance_group [ { profile: [ "2" ] } ]')
    with pytest.raises(ConfigError, match=r"profile\(s\) \[2\] but the TensorRT engine has 2"):
        TensorRTBackend().load(loaded.spec, loaded.versions[1])


def test_buffers_are_sized_once_for_the_largest_profile_shapes(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    # S = row sums: [N] FP32 (served as [N, 1]); X: [N, 3] FP32; the largest profile: N = 16
    spec = EngineSpec(
        [tensor_in("X", (-1, 3), TWO_PROFILES), tensor_out("S", (-1,))],
        lambda i: {"S": i["X"].sum(axis=1)},
        num_profiles=2,
    )
    (inst,) = instances(gpu, model(tmp_path, gpu, spec, "instance_group [ { gpus: [ 0 ] } ]"))
    device_sizes = sorted(size for _, size, _ in gpu.named("cudaMalloc"))
    pinned_sizes = sorted(size for _, size, _ in gpu.named("cudaMallocHost"))
    assert device_sizes == pinned_sizes == [16 * 4, 16 * 3 * 4]
    for batch in (1, 16, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 3)).astype(np.float32)
        np.testing.assert_allclose(inst.execute({"X": x})["S"], x.sum(axis=1)[:, None], rtol=1e-6)
    assert len(gpu.named("cudaMalloc")) == 2  # nothing allocated per batch


def test_data_dependent_output_shapes_are_refused(tmp_path: Path, gpu: FakeGpu) -> None:
    spec = EngineSpec(
        [tensor_in("X", (-1, 3), (((1, 3), (1, 3), (4, 3)),)), tensor_out("IDX", (-1,))],
        lambda i: {"IDX": np.flatnonzero(i["X"]).astype(np.float32)},
        data_dependent=frozenset({"IDX"}),
    )
    loaded = model(tmp_path, gpu, spec, "instance_group [ { gpus: [ 0 ] } ]")
    with pytest.raises(ConfigError, match="output 'IDX' has a data-dependent shape"):
        TensorRTBackend().load(loaded.spec, loaded.versions[1])
    assert gpu.live() == {"device": 0, "pinned": 0, "streams": 0}


# --- execution ---------------------------------------------------------------------------------


def test_results_equal_numpy_and_are_copies(tmp_path: Path, gpu: FakeGpu) -> None:
    (inst, *_) = instances(gpu, model(tmp_path, gpu, doubler()))
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((5, 3)).astype(np.float32)
    y1 = inst.execute({"X": x1})["Y"]
    np.testing.assert_array_equal(y1, x1 * 2)
    assert y1.dtype == np.float32 and y1.flags.owndata
    y2 = inst.execute({"X": x1[:1] + 100})["Y"]
    np.testing.assert_array_equal(y2, (x1[:1] + 100) * 2)
    np.testing.assert_array_equal(y1, x1 * 2)  # the next batch did not overwrite it


def test_every_datatype_round_trips_through_the_buffers(tmp_path: Path, gpu: FakeGpu) -> None:
    kinds = [DataType.FLOAT, DataType.HALF, DataType.BF16, DataType.INT8, DataType.INT32]
    kinds += [DataType.INT64, DataType.BOOL, DataType.UINT8]
    profile = (((1, 2), (2, 2), (4, 2)),)
    spec = EngineSpec(
        [tensor_in(f"i{k.value}", (-1, 2), profile, k) for k in kinds]
        + [tensor_out(f"o{k.value}", (-1, 2), k) for k in kinds],
        lambda i: {f"o{k.value}": i[f"i{k.value}"][::-1] for k in kinds},
    )
    (inst, *_) = instances(gpu, model(tmp_path, gpu, spec))
    rng = np.random.default_rng(1)
    inputs = {f"i{k.value}": rng.integers(0, 100, (3, 2)).astype(NUMPY[k]) for k in kinds}
    out = inst.execute(inputs)
    for k in kinds:
        np.testing.assert_array_equal(out[f"o{k.value}"], inputs[f"i{k.value}"][::-1])
        assert out[f"o{k.value}"].dtype == NUMPY[k]


def test_copy_in_execute_copy_out_in_order_on_the_instance_stream(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    spec = EngineSpec(
        [
            tensor_in("A", (-1, 2), (((1, 2), (2, 2), (4, 2)),), DataType.INT32),
            tensor_in("B", (-1, 2), (((1, 2), (2, 2), (4, 2)),), DataType.INT32),
            tensor_out("SUM", (-1, 2), DataType.INT32),
            tensor_out("DIFF", (-1, 2), DataType.INT32),
        ],
        lambda i: {"SUM": i["A"] + i["B"], "DIFF": i["A"] - i["B"]},
    )
    first, second = instances(
        gpu, model(tmp_path, gpu, spec, "instance_group [ { count: 2 gpus: [ 1 ] } ]")
    )
    first_stream, second_stream = (sid for sid, _ in gpu.named("cudaStreamCreate"))
    gpu.calls.clear()
    gpu.ran.clear()
    a = np.array([[1, 2], [3, 4]], np.int32)
    b = np.array([[10, 20], [30, 40]], np.int32)
    out = second.execute({"A": a, "B": b})
    np.testing.assert_array_equal(out["SUM"], a + b)
    np.testing.assert_array_equal(out["DIFF"], a - b)
    sequence = [c[0] for c in gpu.calls if c[0] in ("H2D", "execute_async_v3", "D2H")]
    assert sequence == ["H2D", "H2D", "execute_async_v3", "D2H", "D2H"]
    assert {c[1] for c in gpu.calls if c[0] in ("H2D", "D2H")} == {second_stream}
    assert [c[1] for c in gpu.named("execute_async_v3")] == [second_stream]
    sid = second_stream
    assert gpu.ran == [(sid, "H2D"), (sid, "H2D"), (sid, "execute"), (sid, "D2H"), (sid, "D2H")]
    assert gpu.calls[-1] == ("cudaStreamSynchronize", sid)
    assert gpu.calls[0] == ("cudaSetDevice", 1)
    gpu.ran.clear()
    first.execute({"A": a, "B": b})
    assert {stream for stream, _ in gpu.ran} == {first_stream}


def test_one_context_and_stream_per_instance_on_each_gpu(tmp_path: Path, gpu: FakeGpu) -> None:
    loaded = model(tmp_path, gpu, doubler(), "instance_group [ { count: 2 gpus: [ 0, 1 ] } ]")
    assert loaded.spec.instance_count == 4
    found = instances(gpu, loaded)
    assert [i.device for i in found] == [0, 0, 1, 1]
    streams = gpu.named("cudaStreamCreate")
    assert [device for _, device in streams] == [0, 0, 1, 1]
    assert len({sid for sid, _ in streams}) == 4
    assert [c.device for c in gpu.contexts] == [0, 0, 1, 1]
    assert len({c.id for c in gpu.contexts}) == 4
    # dynamic shapes: each context gets an engine of its own (a profile serves one context)
    assert [e.device for e in gpu.engines] == [0, 0, 1, 1]
    # every buffer is on its instance's GPU: 2 tensors x 4 instances
    assert sorted(d for _, _, d in gpu.named("cudaMalloc")) == [0] * 4 + [1] * 4
    for inst in found:
        gpu.cudart.cudaSetDevice(1 - inst.device)  # another thread left another GPU current
        np.testing.assert_array_equal(inst.execute({"X": X})["Y"], X * 2)
    executed = gpu.named("execute_async_v3")
    assert sorted(c[0] for c in executed) == sorted(c.id for c in gpu.contexts)
    assert len({c[1] for c in executed}) == 4  # four streams


def test_engines_without_dynamic_shapes_are_shared_per_gpu(tmp_path: Path, gpu: FakeGpu) -> None:
    spec = EngineSpec(
        [tensor_in("X", (2, 3)), tensor_out("Y", (2, 3))], lambda i: {"Y": i["X"] * 2}
    )
    found = instances(
        gpu, model(tmp_path, gpu, spec, "instance_group [ { count: 3 gpus: [ 0, 1 ] } ]")
    )
    assert len(found) == 6
    assert [e.device for e in gpu.engines] == [0, 1]
    assert len(gpu.contexts) == 6
    np.testing.assert_array_equal(found[4].execute({"X": X})["Y"], X * 2)


def test_close_frees_every_buffer_and_stream(tmp_path: Path, gpu: FakeGpu) -> None:
    loaded = model(tmp_path, gpu, doubler(), "instance_group [ { count: 2 gpus: [ 0, 1 ] } ]")
    result = TensorRTBackend().load(loaded.spec, loaded.versions[1])
    result.instances[0].execute({"X": X})
    assert gpu.live() == {"device": 8, "pinned": 8, "streams": 4}
    allocated = {p for p, _, _ in gpu.named("cudaMalloc")}
    pinned = {p for p, _, _ in gpu.named("cudaMallocHost")}
    result.close()
    assert gpu.live() == {"device": 0, "pinned": 0, "streams": 0}
    assert {p for (p,) in gpu.named("cudaFree")} == allocated
    assert {p for (p,) in gpu.named("cudaFreeHost")} == pinned


def test_a_failed_load_frees_what_it_allocated(
    tmp_path: Path, gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = model(tmp_path, gpu, doubler(), "instance_group [ { count: 2 gpus: [ 0, 1 ] } ]")
    calls = 0
    real = gpu.cudart.cudaMalloc

    def fail_the_fifth(size: int) -> tuple[object, ...]:
        nonlocal calls
        calls += 1
        if calls == 5:
            return cudaError_t.cudaErrorMemoryAllocation, 0
        return real(size)

    monkeypatch.setattr(gpu.cudart, "cudaMalloc", fail_the_fifth)
    with pytest.raises(ResourceExhausted, match="cudaMalloc failed: out of GPU or pinned memory"):
        TensorRTBackend().load(loaded.spec, loaded.versions[1])
    assert gpu.live() == {"device": 0, "pinned": 0, "streams": 0}


# --- errors --------------------------------------------------------------------------------------


def test_an_engine_from_another_tensorrt_version(tmp_path: Path, gpu: FakeGpu) -> None:
    model_dir = make_model_dir(tmp_path, "trt", b"built by TensorRT 8.6", filename="model.plan")
    plan = model_dir / "1" / "model.plan"
    for call in (
        lambda: load_model_config(model_dir, BackendInspector().read_signature, gpu_count=1),
        lambda: TensorRTBackend().verify(plan),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        message = info.value.message
        assert message.startswith(
            "model.plan could not be deserialised by TensorRT 10.3: it was built by another "
            "TensorRT version or for another GPU"
        )
        assert "expecting library version 10.3.0.26 got 8.6.1.6" in message
        assert info.value.hint.startswith("rebuild it with TensorRT 10.3 on this GPU model")
        assert info.value.path == str(plan)


def test_missing_packages_are_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ConfigError, match="needs the tensorrt package") as info:
        trt_backend._modules()
    assert "install volley-server[tensorrt]" in info.value.hint
    plan = tmp_path / "model.plan"
    plan.write_bytes(PLAN)
    with pytest.raises(ConfigError, match="needs the tensorrt package"):
        TensorRTBackend().verify(plan)
    # without the package the engine cannot be read: inputs and outputs must be configured
    assert TensorRTBackend().read_signature(plan) is None
    model_dir = make_model_dir(
        tmp_path, "trt", PLAN, config="max_batch_size: 8", filename="model.plan"
    )
    with pytest.raises(ConfigError, match="needs its inputs and outputs") as info:
        load_model_config(model_dir, BackendInspector().read_signature, gpu_count=1)
    assert "install volley-server[tensorrt]" in info.value.hint


def test_cuda_python_is_found_under_either_name(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGpu()
    monkeypatch.setitem(sys.modules, "tensorrt", fake.trt)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake.cudart)
    assert trt_backend._modules() == (fake.trt, fake.cudart)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", fake.cudart)
    assert trt_backend._modules() == (fake.trt, fake.cudart)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(ConfigError, match="needs cuda-python") as info:
        trt_backend._modules()
    assert "install volley-server[tensorrt]" in info.value.hint
