"""Sequence batching: interleaved sequences from concurrent clients each get their own
accumulated result (Direct and Oldest), over unary and stream calls; idle timeout; state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from sequence_models import write_accumulator

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from inproc import running_server

OLDEST = "oldest { max_candidate_sequences: 8 preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 5000 }"


def request(
    value: int,
    sequence: int | str,
    start: bool = False,
    end: bool = False,
    model: str = "acc",
) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name="INPUT", datatype="INT32", shape=[1, 1])
    msg.raw_input_contents.append(np.array([[value]], np.int32).tobytes())
    if isinstance(sequence, str):
        msg.parameters["sequence_id"].string_param = sequence
    else:
        msg.parameters["sequence_id"].uint64_param = sequence
    if start:
        msg.parameters["sequence_start"].bool_param = True
    if end:
        msg.parameters["sequence_end"].bool_param = True
    return msg


def output(response: pb.ModelInferResponse) -> int:
    names = [o.name for o in response.outputs]
    assert "ACC_OUT" not in names  # state stays in the server
    return int(np.frombuffer(response.raw_output_contents[names.index("OUTPUT")], np.int32)[0])


async def run_sequence(
    stub: pb_grpc.GRPCInferenceServiceStub, ident: int, values: list[int]
) -> list[int]:
    sums = []
    for i, value in enumerate(values):
        msg = request(value, ident, start=i == 0, end=i == len(values) - 1)
        response = await stub.ModelInfer(msg, timeout=20)
        corr = response.raw_output_contents[[o.name for o in response.outputs].index("CORR_OUT")]
        assert int(np.frombuffer(corr, np.uint64)[0]) == ident
        sums.append(output(response))
        await asyncio.sleep(0)
    return sums


@pytest.mark.parametrize("strategy", ["direct { }", OLDEST])
async def test_interleaved_sequences_keep_their_own_state(tmp_path: Path, strategy: str) -> None:
    write_accumulator(tmp_path, strategy=strategy)
    async with running_server(tmp_path) as (_server, stub, _ch):
        plans = {ident: [ident * 10 + k for k in range(1, 7)] for ident in range(1, 11)}
        results = await asyncio.gather(
            *(run_sequence(stub, ident, values) for ident, values in plans.items())
        )
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="acc"))
    for (_ident, values), sums in zip(plans.items(), results, strict=True):
        assert sums == list(np.cumsum(values))
    (s,) = stats.model_stats
    assert s.inference_count == 60
    assert s.execution_count < 60  # requests of different sequences shared batches


async def test_more_sequences_than_slots_wait_for_one(tmp_path: Path) -> None:
    write_accumulator(tmp_path, max_batch_size=2)  # direct: two slots
    async with running_server(tmp_path) as (_server, stub, _ch):
        results = await asyncio.gather(*(run_sequence(stub, i, [1, 2, 3]) for i in range(1, 7)))
    assert results == [[1, 3, 6]] * 6


async def test_start_end_and_idle_rules(tmp_path: Path) -> None:
    write_accumulator(tmp_path, idle_us=300_000)
    async with running_server(tmp_path) as (_server, stub, _ch):
        with pytest.raises(grpc.aio.AioRpcError) as no_start:
            await stub.ModelInfer(request(1, 77))
        assert no_start.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "must specify the START flag" in (no_start.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as no_id:
            await stub.ModelInfer(request(1, 0, start=True))
        assert "non-zero or non-empty correlation ID" in (no_id.value.details() or "")

        assert output(await stub.ModelInfer(request(5, 9, start=True))) == 5
        assert output(await stub.ModelInfer(request(5, 9))) == 10
        assert output(await stub.ModelInfer(request(1, 9, start=True))) == 1  # restarted
        assert output(await stub.ModelInfer(request(2, 9, end=True))) == 3
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await stub.ModelInfer(request(1, 9))
        assert "START flag" in (ended.value.details() or "")

        assert output(await stub.ModelInfer(request(4, 10, start=True))) == 4
        await asyncio.sleep(0.8)  # past max_sequence_idle_microseconds: released
        with pytest.raises(grpc.aio.AioRpcError) as idle:
            await stub.ModelInfer(request(1, 10))
        assert idle.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "START flag" in (idle.value.details() or "")


async def test_string_correlation_ids(tmp_path: Path) -> None:
    write_accumulator(tmp_path, corrid="TYPE_STRING")
    async with running_server(tmp_path) as (_server, stub, _ch):
        first = await stub.ModelInfer(request(2, "user-a", start=True))
        await stub.ModelInfer(request(100, "user-b", start=True))
        second = await stub.ModelInfer(request(3, "user-a", end=True))
    assert output(first) == 2 and output(second) == 5
    names = [o.name for o in second.outputs]
    corr = second.raw_output_contents[names.index("CORR_OUT")]
    assert corr[4:] == b"user-a"  # a BYTES element: 4-byte length, then the id


async def test_sequences_over_one_stream(tmp_path: Path) -> None:
    write_accumulator(tmp_path)
    async with running_server(tmp_path) as (_server, stub, _ch):

        async def messages() -> AsyncIterator[pb.ModelInferRequest]:
            for step in range(4):
                for ident in (5, 6):
                    yield request(ident, ident, start=step == 0, end=step == 3)

        sums: dict[int, list[int]] = {5: [], 6: []}
        async for reply in stub.ModelStreamInfer(messages()):
            assert not reply.error_message, reply.error_message
            response = reply.infer_response
            names = [o.name for o in response.outputs]
            corr = response.raw_output_contents[names.index("CORR_OUT")]
            sums[int(np.frombuffer(corr, np.uint64)[0])].append(output(response))
    assert sums == {5: [5, 10, 15, 20], 6: [6, 12, 18, 24]}
