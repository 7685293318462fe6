"""The server over gRPC: every implemented RPC, correct outputs, and errors that harm nobody."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from inproc import EXAMPLES, running_server

Stub = pb_grpc.GRPCInferenceServiceStub


def dense_request(batch: np.ndarray, **kw: object) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="dense_classifier", **kw)  # type: ignore[arg-type]
    msg.inputs.add(name="INPUT", datatype="FP32", shape=batch.shape)
    msg.raw_input_contents.append(batch.astype(np.float32).tobytes())
    return msg


def reference_dense(batch: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(EXAMPLES / "dense_classifier/1/model.onnx"))
    return session.run(["LOGITS", "PROBS"], {"INPUT": batch.astype(np.float32)})


async def expect_error(call: object, code: grpc.StatusCode, fragment: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    assert fragment in (info.value.details() or ""), info.value.details()


async def test_health_metadata_and_config(example_repo: Path) -> None:
    async with running_server(example_repo) as (_, stub, channel):
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
        assert (await stub.ModelReady(pb.ModelReadyRequest(name="simple"))).ready
        meta = await stub.ServerMetadata(pb.ServerMetadataRequest())
        assert meta.name == "volley" and "statistics" in meta.extensions
        md = await stub.ModelMetadata(pb.ModelMetadataRequest(name="dense_classifier"))
        assert md.platform == "onnxruntime_onnx" and list(md.versions) == ["1"]
        assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [
            ("INPUT", "FP32", [-1, 64])
        ]
        assert [t.name for t in md.outputs] == ["LOGITS", "PROBS"]
        cfg = (await stub.ModelConfig(pb.ModelConfigRequest(name="simple"))).config
        assert cfg.max_batch_size == 4 and cfg.HasField("dynamic_batching")
        assert [i.name for i in cfg.input] == ["INPUT0", "INPUT1"] and list(cfg.input[0].dims) == [
            16
        ]
        health = health_pb2_grpc.HealthStub(channel)
        status = (await health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        async for answer in refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names = {s.name for s in answer.list_services_response.service}
            assert "inference.GRPCInferenceService" in names and "grpc.health.v1.Health" in names


async def test_infer_matches_in_process_onnxruntime(example_repo: Path) -> None:
    batch = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    async with running_server(example_repo) as (_, stub, _ch):
        response = await stub.ModelInfer(dense_request(batch, id="req-7"))
        assert (response.id, response.model_name, response.model_version) == (
            "req-7",
            "dense_classifier",
            "1",
        )
        logits, probs = reference_dense(batch)
        by_name = {
            o.name: (o, raw)
            for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }
        for name, ref in (("LOGITS", logits), ("PROBS", probs)):
            out, raw = by_name[name]
            assert out.datatype == "FP32" and list(out.shape) == [5, 10]
            np.testing.assert_allclose(
                np.frombuffer(raw, np.float32).reshape(5, 10), ref, rtol=1e-5
            )
        subset = dense_request(batch)
        subset.outputs.add(name="PROBS")
        response = await stub.ModelInfer(subset)
        assert [o.name for o in response.outputs] == ["PROBS"]


async def test_typed_contents_bytes_and_int64(example_repo: Path) -> None:
    async with running_server(example_repo) as (_, stub, _ch):
        msg = pb.ModelInferRequest(model_name="text_features", model_version="1")
        text = msg.inputs.add(name="TEXT", datatype="BYTES", shape=[3])
        text.contents.bytes_contents.extend([b"Hello", b"", b"MiXeD Case"])
        ids = msg.inputs.add(name="IDS", datatype="INT64", shape=[4])
        ids.contents.int64_contents.extend([1, 2, 3, 2**40])
        response = await stub.ModelInfer(msg)
        raw = dict(
            zip([o.name for o in response.outputs], response.raw_output_contents, strict=True)
        )
        assert raw["TEXT_LOWER"] == (b"\x05\0\0\0hello" + b"\0\0\0\0" + b"\x0a\0\0\0mixed case")
        np.testing.assert_array_equal(np.frombuffer(raw["IDS_DOUBLED"], "<i8"), [2, 4, 6, 2**41])
        np.testing.assert_array_equal(np.frombuffer(raw["IDS_SUM"], "<i8"), [6 + 2**40])


async def test_bad_requests_get_clear_errors_and_harm_nobody(example_repo: Path) -> None:
    good = np.ones((2, 64), np.float32)
    async with running_server(example_repo) as (_, stub, _ch):
        bad_size = dense_request(good)
        bad_size.raw_input_contents[0] = b"\0" * 12
        cases = [
            (
                pb.ModelInferRequest(model_name="nope"),
                grpc.StatusCode.NOT_FOUND,
                "unknown model: 'nope'",
            ),
            (
                dense_request(good, model_version="9"),
                grpc.StatusCode.NOT_FOUND,
                "version 9 is not found",
            ),
            (
                dense_request(good, model_version="x"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "version string",
            ),
            (bad_size, grpc.StatusCode.INVALID_ARGUMENT, "expected 512 bytes"),
            (
                dense_request(np.ones((33, 64))),
                grpc.StatusCode.INVALID_ARGUMENT,
                "batch-size must be <= 32",
            ),
            (
                dense_request(np.ones((1, 63))),
                grpc.StatusCode.INVALID_ARGUMENT,
                "Expected [-1, 64], got [1, 63]",
            ),
            (
                pb.ModelInferRequest(model_name="dense_classifier"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "expected 1 inputs but got 0",
            ),
        ]
        wrong_type = dense_request(good)
        wrong_type.inputs[0].datatype = "FP64"
        cases.append((wrong_type, grpc.StatusCode.INVALID_ARGUMENT, "expects 'FP32'"))
        extra = dense_request(good)
        extra.inputs.add(name="EXTRA", datatype="FP32", shape=[2, 64])
        extra.raw_input_contents.append(good.tobytes())
        cases.append((extra, grpc.StatusCode.INVALID_ARGUMENT, "expected 1 inputs but got 2"))

        async def good_call() -> np.ndarray:
            response = await stub.ModelInfer(dense_request(good))
            return np.frombuffer(response.raw_output_contents[0], np.float32)

        results = await asyncio.gather(
            *(expect_error(stub.ModelInfer(m), code, frag) for m, code, frag in cases),
            *(good_call() for _ in range(10)),
        )
        expected = reference_dense(good)[0].reshape(-1)
        for logits in results[len(cases) :]:
            np.testing.assert_allclose(logits, expected, rtol=1e-5)
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="dense_classifier"))
        s = stats.model_stats[0]
        assert s.inference_stats.success.count == 10
        # unknown model, unknown version and a malformed version resolve to no version
        assert s.inference_stats.fail.count == len(cases) - 3
        assert s.inference_count == 20


async def test_statistics_and_repository_index(example_repo: Path) -> None:
    async with running_server(example_repo) as (_, stub, _ch):
        for _ in range(3):
            await stub.ModelInfer(dense_request(np.ones((4, 64))))
        stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest())).model_stats
        assert sorted(s.name for s in stats) == ["dense_classifier", "simple", "text_features"]
        dense = next(s for s in stats if s.name == "dense_classifier")
        assert dense.inference_count == 12 and dense.execution_count == 3
        assert dense.inference_stats.compute_infer.count == 3
        assert dense.inference_stats.compute_infer.ns > 0 and dense.last_inference > 0
        assert [(b.batch_size, b.compute_infer.count) for b in dense.batch_stats] == [(4, 3)]
        await expect_error(
            stub.ModelStatistics(pb.ModelStatisticsRequest(name="nope")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'nope' is not available",
        )
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        assert [(m.name, m.version, m.state) for m in index.models] == [
            ("dense_classifier", "1", "READY"),
            ("simple", "1", "READY"),
            ("text_features", "1", "READY"),
        ]


async def test_unimplemented_and_mode_errors(example_repo: Path) -> None:
    async with running_server(example_repo) as (_, stub, _ch):
        await expect_error(
            stub.CudaSharedMemoryRegister(pb.CudaSharedMemoryRegisterRequest(name="r")),
            grpc.StatusCode.UNIMPLEMENTED,
            "CUDA shared memory",
        )
        none = await stub.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest())
        assert not none.regions
        await stub.CudaSharedMemoryUnregister(pb.CudaSharedMemoryUnregisterRequest())
        await expect_error(
            stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(name="nope")),
            grpc.StatusCode.NOT_FOUND,
            "'nope'",
        )
        await expect_error(
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="simple")),
            grpc.StatusCode.UNAVAILABLE,
            "explicit model load / unload is not allowed",
        )
        await expect_error(
            stub.RepositoryIndex(pb.RepositoryIndexRequest(repository_name="r")),
            grpc.StatusCode.UNIMPLEMENTED,
            "repository_name",
        )


async def test_explicit_mode_load_and_unload(example_repo: Path) -> None:
    async with running_server(example_repo, model_control_mode="explicit") as (_, stub, _ch):
        await expect_error(
            stub.ModelReady(pb.ModelReadyRequest(name="simple")),
            grpc.StatusCode.NOT_FOUND,
            "simple",
        )
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="simple"))
        assert (await stub.ModelReady(pb.ModelReadyRequest(name="simple"))).ready
        await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="simple"))
        assert not (await stub.ModelReady(pb.ModelReadyRequest(name="simple", version="1"))).ready
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        simple = [m for m in index.models if m.name == "simple"]
        assert [(m.state, m.reason) for m in simple] == [("UNAVAILABLE", "unloaded")]
        await expect_error(
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="missing")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "load failed for model 'missing'",
        )


async def test_broken_model_does_not_stop_the_others(example_repo: Path) -> None:
    broken = example_repo / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.onnx").write_bytes(b"this is not onnx")
    (broken / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 0\n'
        'input [{name: "x" data_type: TYPE_FP32 dims: [1]}]\n'
        'output [{name: "y" data_type: TYPE_FP32 dims: [1]}]\n'
    )
    async with running_server(example_repo) as (_, stub, _ch):
        assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
        await stub.ModelInfer(dense_request(np.ones((1, 64))))
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        entry = next(m for m in index.models if m.name == "broken")
        assert entry.state == "UNAVAILABLE" and entry.reason
        await expect_error(
            stub.ModelInfer(pb.ModelInferRequest(model_name="broken")),
            grpc.StatusCode.NOT_FOUND,
            "no available versions",
        )


async def test_stream_infer_keeps_order_and_reports_errors_in_stream(example_repo: Path) -> None:
    async with running_server(example_repo) as (_, stub, _ch):
        good = [dense_request(np.full((1, 64), float(i)), id=f"ok-{i}") for i in range(5)]
        bad = dense_request(np.ones((1, 63)), id="bad")
        requests = [good[0], good[1], bad, good[2], good[3], good[4]]
        answers = [a async for a in stub.ModelStreamInfer(iter(requests))]
        assert [a.infer_response.id for a in answers] == [r.id for r in requests]
        assert "Expected [-1, 64], got [1, 63]" in answers[2].error_message
        for answer in answers[:2] + answers[3:]:
            assert answer.error_message == ""
            assert answer.infer_response.parameters["triton_final_response"].bool_param
        logits = np.frombuffer(answers[3].infer_response.raw_output_contents[0], np.float32)
        np.testing.assert_allclose(logits, reference_dense(np.full((1, 64), 2.0))[0][0], rtol=1e-5)


async def test_server_name_is_configurable(example_repo: Path) -> None:
    async with running_server(example_repo, server_name="triton") as (_, stub, _ch):
        meta = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "triton"
