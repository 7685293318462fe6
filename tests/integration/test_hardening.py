"""Bad requests get a clear error and never hurt another request (both transports)."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import running_server


def text_request(items: list[bytes]) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="text_features")
    msg.inputs.add(name="TEXT", datatype="BYTES", shape=[len(items)])
    msg.raw_input_contents.append(b"".join(struct.pack("<I", len(i)) + i for i in items))
    msg.inputs.add(name="IDS", datatype="INT64", shape=[2])
    msg.raw_input_contents.append(np.array([1, 2], np.int64).tobytes())
    return msg


async def test_non_utf8_text_fails_only_its_own_request(example_repo: Path) -> None:
    async with running_server(example_repo) as (_, stub, _ch):
        good = [stub.ModelInfer(text_request([b"Hello", b"World"])) for _ in range(8)]
        bad = stub.ModelInfer(text_request([b"ok", b"\xff\xfe"]))
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        for response in results[:-1]:
            assert isinstance(response, pb.ModelInferResponse), response
        error = results[-1]
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in (error.details() or "") and "element 1" in (error.details() or "")


async def test_huge_declared_shapes_fail_fast_and_cleanly(example_repo: Path) -> None:
    async with running_server(example_repo) as (_, stub, _ch):
        for shape in ([1_000_000_000], [2**62]):
            msg = pb.ModelInferRequest(model_name="text_features")
            msg.inputs.add(name="TEXT", datatype="BYTES", shape=shape)
            msg.raw_input_contents.append(b"")
            msg.inputs.add(name="IDS", datatype="INT64", shape=[1])
            msg.raw_input_contents.append(np.array([1], np.int64).tobytes())
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ModelInfer(msg)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert time.monotonic() - started < 1.0
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live


async def test_odd_version_strings_are_invalid_arguments(
    example_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with running_server(example_repo) as (_, stub, _ch):
        for version in ("²", "-1", "v1"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ModelReady(pb.ModelReadyRequest(name="simple", version=version))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_load_errors_name_no_absolute_paths(example_repo: Path) -> None:
    broken = example_repo / "broken" / "1"
    broken.mkdir(parents=True)
    import onnx

    from onnx_models import unknown_op

    onnx.save(unknown_op(), str(broken / "model.onnx"))
    async with running_server(example_repo) as (_, stub, _ch):
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        reasons = [m.reason for m in index.models if m.name == "broken"]
        assert reasons and reasons[0], index
        assert str(example_repo) not in reasons[0] and "/tmp" not in reasons[0], reasons[0]
        assert "broken/1/model.onnx" in reasons[0] or "model.onnx" in reasons[0]
