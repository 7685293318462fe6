"""Ensembles (Triton's composed models) over gRPC: scale -> classifier -> softmax/argmax.

The ensemble must answer exactly what running the three ONNX models by hand answers, batch its
middle model under concurrent load, name the step that failed, follow its composing models'
readiness, and run Python steps from its ``model.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from inproc import running_server
from onnx_models import IR_VERSION, OPSET, make_model_dir

RNG = np.random.default_rng(7)
WEIGHT = RNG.standard_normal((4, 3)).astype(np.float32)
BIAS = RNG.standard_normal(3).astype(np.float32)

STEP_CONFIG = 'backend: "onnxruntime"\nmax_batch_size: 64\ndynamic_batching { }\n'
CLASSIFIER_CONFIG = """backend: "onnxruntime"
max_batch_size: 64
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

PIPELINE = """platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [
  { name: "PROBS" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "LABEL" data_type: TYPE_INT64 dims: [ 1 ] }
]
ensemble_scheduling { step [
  { model_name: "pre" model_version: -1
    input_map { key: "x" value: "IN" } output_map { key: "y" value: "scaled" } },
  { model_name: "classifier" model_version: -1
    input_map { key: "x" value: "scaled" } output_map { key: "logits" value: "logits" } },
  { model_name: "post" model_version: -1
    input_map { key: "logits" value: "logits" }
    output_map { key: "probs" value: "PROBS" } output_map { key: "label" value: "LABEL" } }
] }
"""

#: The same pipeline with its first step in Python.
PYTHON_PIPELINE = PIPELINE.replace('model_name: "pre"', 'model_name: "python:prep"').replace(
    "dims: [ -1 ] } ]", "dims: [ 4 ] } ]", 1
)
MODEL_PY = """
import numpy as np

from volley.errors import InvalidArgument


def prep(inputs):
    x = inputs["x"]
    if np.isnan(x).any():
        raise InvalidArgument("x holds NaN")
    if (x < -100).any():
        raise ValueError("input below -100")
    return {"y": x * np.float32(2)}
"""
MODELS = ("pre", "classifier", "post")


def _save(
    model_dir: Path, nodes: list[onnx.NodeProto], inputs: list, outputs: list, **kw: list
) -> None:
    graph = helper.make_graph(nodes, model_dir.name, inputs, outputs, **kw)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    make_model_dir(model_dir.parent, model_dir.name, model)


def build_repository(root: Path) -> Path:
    """pre (x * 2), classifier (x @ W + b), post (softmax, argmax) and two ensembles."""
    fp32, i64 = TensorProto.FLOAT, TensorProto.INT64
    info = helper.make_tensor_value_info
    _save(
        root / "pre",
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        [info("x", fp32, ["N", "D"])],
        [info("y", fp32, ["N", "D"])],
        initializer=[numpy_helper.from_array(np.array(2, np.float32), "two")],
    )
    _save(
        root / "classifier",
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
        ],
        [info("x", fp32, ["N", 4])],
        [info("logits", fp32, ["N", 3])],
        initializer=[numpy_helper.from_array(WEIGHT, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    _save(
        root / "post",
        [
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=1),
        ],
        [info("logits", fp32, ["N", 3])],
        [info("probs", fp32, ["N", 3]), info("label", i64, ["N", 1])],
    )
    (root / "pre" / "config.pbtxt").write_text(STEP_CONFIG)
    (root / "post" / "config.pbtxt").write_text(STEP_CONFIG)
    (root / "classifier" / "config.pbtxt").write_text(CLASSIFIER_CONFIG)
    make_model_dir(root, "pipeline", config=PIPELINE)
    make_model_dir(root, "pypipe", config=PYTHON_PIPELINE)
    (root / "pypipe" / "1" / "model.py").write_text(MODEL_PY)
    return root


def by_hand(root: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The three models run one after the other with onnxruntime."""

    def run(name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = ort.InferenceSession(str(root / name / "1" / "model.onnx"))
        return session.run(None, feeds)

    (scaled,) = run("pre", {"x": x})
    (logits,) = run("classifier", {"x": scaled})
    probs, label = run("post", {"logits": logits})
    return probs, label


def infer_request(x: np.ndarray, model: str = "pipeline") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name="IN", datatype="FP32", shape=x.shape)
    msg.raw_input_contents.append(x.tobytes())
    return msg


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    types = {"FP32": np.float32, "INT64": np.int64}
    return {
        out.name: np.frombuffer(raw, types[out.datatype]).reshape(out.shape)
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def statistics(stub: pb_grpc.GRPCInferenceServiceStub, name: str) -> pb.ModelStatistics:
    request = pb.ModelStatisticsRequest(name=name)
    return (await stub.ModelStatistics(request)).model_stats[0]


async def test_ensemble_equals_the_models_run_by_hand(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    async with running_server(root) as (_, stub, _ch):
        got = outputs(await stub.ModelInfer(infer_request(x)))
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="pipeline"))
        config = (await stub.ModelConfig(pb.ModelConfigRequest(name="pipeline"))).config
        assert (await stub.ModelReady(pb.ModelReadyRequest(name="pipeline"))).ready
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    probs, label = by_hand(root, x)
    np.testing.assert_allclose(got["PROBS"], probs, rtol=1e-6)
    np.testing.assert_array_equal(got["LABEL"], label)
    assert meta.platform == "ensemble"
    assert [(t.name, list(t.shape)) for t in meta.outputs] == [
        ("PROBS", [-1, 3]),
        ("LABEL", [-1, 1]),
    ]
    assert [s.model_name for s in config.ensemble_scheduling.step] == list(MODELS)
    assert not config.instance_group


async def test_concurrent_requests_batch_the_classifier(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    xs = [RNG.standard_normal((1, 4)).astype(np.float32) for _ in range(64)]
    async with running_server(root) as (_, stub, _ch):
        responses = await asyncio.gather(*(stub.ModelInfer(infer_request(x)) for x in xs))
        ensemble = await statistics(stub, "pipeline")
        classifier = await statistics(stub, "classifier")
    for x, response in zip(xs, responses, strict=True):
        np.testing.assert_allclose(outputs(response)["PROBS"], by_hand(root, x)[0], rtol=1e-6)
    assert ensemble.inference_stats.success.count == 64
    assert classifier.inference_stats.success.count == 64
    assert classifier.inference_count == 64
    assert classifier.execution_count < classifier.inference_count  # batches were formed


async def test_failing_step_is_named_and_keeps_its_status(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    wide = np.ones((1, 5), np.float32)  # fine for the ensemble and 'pre', not the classifier
    async with running_server(root) as (_, stub, _ch):
        error = await rpc_error(stub.ModelInfer(infer_request(wide)))
        classifier = await statistics(stub, "classifier")
        ensemble = await statistics(stub, "pipeline")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("ensemble 'pipeline' step 2 ('classifier'): ")
    assert "[1, 5]" in error.details() and "[-1, 4]" in error.details()
    assert classifier.inference_stats.fail.count == 1
    assert ensemble.inference_stats.fail.count == 1


async def test_readiness_follows_the_composing_models(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    x = np.ones((1, 4), np.float32)
    ready_rpc = pb.ModelReadyRequest(name="pipeline")
    async with running_server(root, ["pipeline"], model_control_mode="explicit") as (_, stub, _c):
        # loaded before its composing models: loaded, but not ready
        assert not (await stub.ModelReady(ready_rpc)).ready
        error = await rpc_error(stub.ModelInfer(infer_request(x)))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "step 1 ('pre')" in error.details() and "model 'pre'" in error.details()
        for name in MODELS:
            await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name))
        assert (await stub.ModelReady(ready_rpc)).ready
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
        await stub.ModelInfer(infer_request(x))

        await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="classifier"))
        assert not (await stub.ModelReady(ready_rpc)).ready
        assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
        error = await rpc_error(stub.ModelInfer(infer_request(x)))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "step 2 ('classifier')" in error.details()
        assert "model 'classifier' is not ready" in error.details()

        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="classifier"))
        assert (await stub.ModelReady(ready_rpc)).ready
        await stub.ModelInfer(infer_request(x))


async def test_python_step(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    async with running_server(root) as (_, stub, _ch):
        got = outputs(await stub.ModelInfer(infer_request(x, "pypipe")))
        failed = await rpc_error(stub.ModelInfer(infer_request(x - 1000, "pypipe")))
        rejected = await rpc_error(stub.ModelInfer(infer_request(x * np.nan, "pypipe")))
    probs, label = by_hand(root, x)
    np.testing.assert_allclose(got["PROBS"], probs, rtol=1e-6)
    np.testing.assert_array_equal(got["LABEL"], label)
    assert failed.code() == grpc.StatusCode.INTERNAL
    assert failed.details() == (
        "ensemble 'pypipe' step 1 ('python:prep'): prep raised ValueError: input below -100"
    )
    assert rejected.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rejected.details() == "ensemble 'pypipe' step 1 ('python:prep'): x holds NaN"


async def test_broken_model_py_fails_the_load(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    (root / "pypipe" / "1" / "model.py").write_text("def prep(inputs):\n    return (\n")
    async with running_server(root, ["pre"], model_control_mode="explicit") as (_, stub, _c):
        request = pb.RepositoryModelLoadRequest(model_name="pypipe")
        error = await rpc_error(stub.RepositoryModelLoad(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "importing model.py failed: SyntaxError" in error.details()


async def test_tritonclient_http_calls_the_ensemble(tmp_path: Path) -> None:
    aioclient = pytest.importorskip("tritonclient.http.aio")
    root = build_repository(tmp_path)
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    async with running_server(root) as (server, _stub, _ch):
        client = aioclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        try:
            assert await client.is_model_ready("pipeline")
            tensor = aioclient.InferInput("IN", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = await client.infer("pipeline", [tensor])
        finally:
            await client.close()
    probs, label = by_hand(root, x)
    np.testing.assert_allclose(result.as_numpy("PROBS"), probs, rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("LABEL"), label)
