"""Dynamic batching over gRPC: batches form under load, parameters and deadlines are honoured."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import running_server
from onnx_models import write_matmul_chain

WIDTH = 256
#: Big enough that one batch of 4-16 rows keeps an instance busy for a few hundred ms.
SLOW_WIDTH, SLOW_LAYERS = 1024, 600


def write_model(root: Path, config: str, layers: int = 8, width: int = WIDTH) -> Path:
    """A row-wise dense model (``[batch, width]`` in and out) with the given config."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((width, width)) / width**0.5
    write_matmul_chain(root / "dense", weight, layers, "b")
    (root / "dense" / "config.pbtxt").write_text(config)
    return root


def dense_request(x: np.ndarray, **params: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="dense")
    msg.inputs.add(name="X", datatype="FP32", shape=x.shape)
    msg.raw_input_contents.append(x.tobytes())
    for key, value in params.items():
        msg.parameters[key].int64_param = value
    return msg


def expected(x: np.ndarray, root: Path) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(root / "dense" / "1" / "model.onnx"))
    return session.run(["Y"], {"X": x})[0]


BATCHING = """
backend: "onnxruntime"
max_batch_size: 16
dynamic_batching { preferred_batch_size: [ 16 ] max_queue_delay_microseconds: 20000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


async def test_concurrent_clients_are_batched_and_answered_correctly(tmp_path: Path) -> None:
    root = write_model(tmp_path, BATCHING)
    rng = np.random.default_rng(0)
    xs = [
        rng.standard_normal((int(rng.integers(1, 4)), WIDTH)).astype(np.float32) for _ in range(40)
    ]
    async with running_server(root) as (_, stub, _ch):
        responses = await asyncio.gather(*(stub.ModelInfer(dense_request(x)) for x in xs))
        for x, response in zip(xs, responses, strict=True):
            y = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(x.shape)
            np.testing.assert_allclose(y, expected(x, root), rtol=1e-4, atol=1e-5)
        stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest(name="dense"))).model_stats[0]
    rows = sum(x.shape[0] for x in xs)
    assert stats.inference_count == rows
    assert stats.execution_count < len(xs)  # batches were formed
    assert max(b.batch_size for b in stats.batch_stats) > 3
    assert all(b.batch_size <= 16 for b in stats.batch_stats)
    assert sum(b.batch_size * b.compute_infer.count for b in stats.batch_stats) == rows


async def test_queue_timeout_parameter_and_full_queue(tmp_path: Path) -> None:
    config = """
backend: "onnxruntime"
max_batch_size: 4
dynamic_batching {
  preferred_batch_size: [ 4 ]
  default_queue_policy { default_timeout_microseconds: 5000000 allow_timeout_override: true
                         max_queue_size: 3 }
}
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""
    root = write_model(tmp_path, config, layers=SLOW_LAYERS, width=SLOW_WIDTH)
    big = np.ones((4, SLOW_WIDTH), np.float32)
    async with running_server(root) as (_, stub, _ch):
        started = time.monotonic()
        await stub.ModelInfer(dense_request(big))  # warm, and how long one batch takes
        one_batch = time.monotonic() - started
        busy = [asyncio.ensure_future(stub.ModelInfer(dense_request(big))) for _ in range(2)]
        await asyncio.sleep(0.02)
        started = time.monotonic()
        small = np.ones((1, SLOW_WIDTH), np.float32)
        try:
            await stub.ModelInfer(dense_request(small, timeout=20_000))
            raise AssertionError("the request should have timed out in the queue")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc.details()
            assert "timeout expired" in (exc.details() or "")
        waited = time.monotonic() - started
        assert waited < one_batch, (waited, one_batch)  # its own timer, not the busy instance
        await asyncio.gather(*busy)
        # one request runs, three fit in the queue, the rest arrive while it is full. The
        # first is sent alone so it is running before the others arrive: a transport that
        # delivers calls in bursts would otherwise queue all eight before the batcher looks.
        running = asyncio.ensure_future(stub.ModelInfer(dense_request(big)))
        await asyncio.sleep(min(0.05, one_batch / 4))
        results = await asyncio.gather(
            running,
            *(stub.ModelInfer(dense_request(big)) for _ in range(7)),
            return_exceptions=True,
        )
        assert not isinstance(results[0], BaseException), results[0]
        rejected = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert 1 <= len(rejected) <= 4, results
        for error in rejected:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "Exceeds maximum queue size" in (error.details() or "")
        for ok in results:
            if not isinstance(ok, BaseException):
                assert len(ok.raw_output_contents[0]) == big.nbytes


async def test_client_deadline_cancels_a_queued_request(tmp_path: Path) -> None:
    config = BATCHING.replace("count: 1", "count: 1").replace("20000", "0")
    root = write_model(tmp_path, config, layers=SLOW_LAYERS, width=SLOW_WIDTH)
    big = np.ones((16, SLOW_WIDTH), np.float32)
    async with running_server(root) as (_, stub, _ch):
        await stub.ModelInfer(dense_request(big))
        busy = asyncio.ensure_future(stub.ModelInfer(dense_request(big)))
        await asyncio.sleep(0.02)
        try:
            small = np.ones((1, SLOW_WIDTH), np.float32)
            await stub.ModelInfer(dense_request(small), timeout=0.05)
            raise AssertionError("expected the client deadline to expire")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await busy
        await asyncio.sleep(0.05)
        stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest(name="dense"))).model_stats[0]
        # the cancelled request never executed: only the two large requests ran
        assert stats.inference_count == 32 and stats.execution_count == 2
