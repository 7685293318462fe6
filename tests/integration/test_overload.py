"""Three times the capacity: every request is answered at once or shed, none hangs, and the
latency of admitted requests stays bounded by the queue bound."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from onnx_models import write_matmul_chain
from server_process import ServerProcess

WIDTH, LAYERS, QUEUE = 1024, 32, 8
CONFIG = f"""backend: "onnxruntime"
max_batch_size: 1
dynamic_batching {{ default_queue_policy {{ max_queue_size: {QUEUE} }} }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
"""


def request() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="slow")
    msg.inputs.add(name="X", datatype="FP32", shape=[1, WIDTH])
    msg.raw_input_contents.append(np.ones((1, WIDTH), np.float32).tobytes())
    return msg


async def test_three_times_capacity_sheds_cleanly(tmp_path: Path) -> None:
    write_matmul_chain(tmp_path / "slow", np.eye(WIDTH) * 0.5, LAYERS, "n")
    (tmp_path / "slow" / "config.pbtxt").write_text(CONFIG)
    server = ServerProcess(tmp_path)  # its own process: the load does not share its loop
    channel = grpc.aio.insecure_channel(server.url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        # capacity: a closed loop that keeps the queue busy
        done, stop = 0, time.monotonic() + 2.0

        async def closed() -> None:
            nonlocal done
            while time.monotonic() < stop:
                await stub.ModelInfer(request(), timeout=10)
                done += 1

        await asyncio.gather(*(closed() for _ in range(8)))
        capacity = done / 2.0
        # three times that, open loop, each request with a deadline
        rate, seconds, deadline = 3 * capacity, 3.0, 5.0
        latencies: list[float] = []
        codes: dict[str, int] = {}

        async def one() -> None:
            started = time.monotonic()
            try:
                await stub.ModelInfer(request(), timeout=deadline)
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                assert time.monotonic() - started < deadline + 1.0
                return
            codes["OK"] = codes.get("OK", 0) + 1
            latencies.append(time.monotonic() - started)

        tasks = []
        begin = time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    finally:
        await channel.close()
        assert server.stop() == 0, server.log()
    assert set(codes) <= {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}, codes
    assert codes.get("OK", 0) > 0 and codes.get("UNAVAILABLE", 0) > 0, codes
    p99 = float(np.percentile(latencies, 99))
    # an admitted request waits behind at most QUEUE others, one execution each; under the
    # open-loop load the client shares the cores, so executions may take up to twice as long
    # as when capacity was measured. Without a bounded queue the wait would reach the deadline.
    bound = 2 * (QUEUE + 2) / capacity + 0.5
    assert bound < deadline / 2
    assert p99 <= bound, (p99, bound, capacity, codes)
