"""Admission control on both transports: restricted APIs, message size, the in-flight cap,
in-stream error codes, and a second signal during shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from inproc import running_server
from onnx_models import write_matmul_chain
from server_process import ServerProcess

ROWS, WIDTH, LAYERS = 256, 512, 12
SECRET = (("triton-grpc-protocol-admin-key", "s3cret"),)


def slow_repository(root: Path, instances: int = 1) -> Path:
    write_matmul_chain(root / "slow", np.eye(WIDTH) * 0.5, LAYERS, ROWS)
    (root / "slow" / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 0\n'
        f"instance_group [{{ count: {instances} kind: KIND_CPU }}]\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )
    return root


def slow_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="X", datatype="FP32", shape=[ROWS, WIDTH])
    request.raw_input_contents.append(np.ones((ROWS, WIDTH), np.float32).tobytes())
    return request


def simple_request(model: str = "simple") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(np.ones((1, 16), np.int32).tobytes())
    return request


async def test_restricted_groups_need_their_header(example_repo: Path) -> None:
    restricted = ["model-repository,statistics:admin-key=s3cret"]
    async with running_server(example_repo, grpc_restricted_protocol=restricted) as (
        _,
        stub,
        _ch,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == (
            "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
        )
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.ModelStatistics(
                pb.ModelStatisticsRequest(),
                metadata=(("triton-grpc-protocol-admin-key", "guess"),),
            )
        assert wrong.value.code() == grpc.StatusCode.UNAVAILABLE
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=SECRET)
        assert {m.name for m in index.models} >= {"simple", "dense_classifier"}
        await stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=SECRET)
        # groups that are not restricted need nothing
        response = await stub.ModelInfer(simple_request())
        assert response.model_name == "simple"
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready


async def test_a_malformed_restriction_stops_the_server_from_starting(example_repo: Path) -> None:
    with pytest.raises(Exception, match="unknown group 'everything'"):
        async with running_server(
            example_repo, grpc_restricted_protocol=["everything:k=v"]
        ) as _started:
            pass


async def test_messages_over_the_size_limit_are_refused(example_repo: Path) -> None:
    async with running_server(example_repo, grpc_max_message_size=64 * 1024) as (
        _,
        stub,
        _ch,
    ):
        big = pb.ModelInferRequest(model_name="simple")
        for name in ("INPUT0", "INPUT1"):
            big.inputs.add(name=name, datatype="INT32", shape=[1, 16])
            big.raw_input_contents.append(b"\0" * 64 * 1024)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ModelInfer(big)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.ModelInfer(simple_request())).model_name == "simple"


async def test_the_inflight_cap_refuses_at_once(tmp_path: Path) -> None:
    async with running_server(slow_repository(tmp_path), max_inflight_requests=2) as (
        _,
        stub,
        _ch,
    ):
        await stub.ModelInfer(slow_request(), timeout=30)  # warm
        started = time.monotonic()
        results = await asyncio.gather(
            *(stub.ModelInfer(slow_request(), timeout=30) for _ in range(6)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(refused) >= 1, results
        assert len(refused) <= 4
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 2 requests in flight" in (error.details() or "")
        assert time.monotonic() - started < 30


async def test_stream_errors_carry_their_status_code(example_repo: Path) -> None:
    async with running_server(example_repo) as (_, stub, _ch):
        bad = simple_request()
        bad.inputs[0].datatype = "FP32"

        async def requests():  # type: ignore[no-untyped-def]
            yield simple_request()
            yield bad
            yield simple_request("nope")

        responses = [r async for r in stub.ModelStreamInfer(requests())]
        assert responses[0].error_message == ""
        codes = [r.infer_response.parameters["triton_error_code"].string_param for r in responses]
        assert codes[1:] == ["INVALID_ARGUMENT", "NOT_FOUND"]
        assert "data-type" in responses[1].error_message


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    server = ServerProcess(slow_repository(tmp_path), extra_args=["--exit-timeout-secs", "60"])
    channel = grpc.insecure_channel(server.url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        started = time.monotonic()
        stub.ModelInfer(slow_request(), timeout=30)
        one_call = time.monotonic() - started
        # enough queued work to keep a graceful shutdown busy for several seconds
        calls = max(int(4 / max(one_call, 0.005)), 8)
        with ThreadPoolExecutor(32) as pool:
            futures = [
                pool.submit(stub.ModelInfer, slow_request(), timeout=60) for _ in range(calls)
            ]
            time.sleep(0.2)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            assert server.proc.poll() is None, "the first signal should drain, not exit"
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(10)
            assert time.monotonic() - started < 5
            for future in futures:
                future.exception()
        assert code == 1, server.log()
        assert "second SIGTERM during shutdown" in server.log()
    finally:
        channel.close()
        server.stop()
