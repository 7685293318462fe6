"""SIGTERM: the server stops accepting, finishes in-flight requests and exits 0."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from onnx_models import write_matmul_chain
from server_process import ServerProcess

ROWS, WIDTH, LAYERS = 256, 512, 48


def slow_repository(root: Path) -> Path:
    """A model that takes a noticeable fraction of a second per request on one thread."""
    write_matmul_chain(root / "slow", np.eye(WIDTH) * 0.5, LAYERS, ROWS)
    (root / "slow" / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 0\ninstance_group [{ count: 2 kind: KIND_CPU }]\n'
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )
    return root


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    server = ServerProcess(slow_repository(tmp_path))
    x = np.ones((ROWS, WIDTH), np.float32)
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="X", datatype="FP32", shape=[ROWS, WIDTH])
    request.raw_input_contents.append(x.tobytes())
    channel = grpc.insecure_channel(server.url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        stub.ModelInfer(request, timeout=30)  # warm
        started = time.monotonic()
        stub.ModelInfer(request, timeout=30)
        one_call = time.monotonic() - started
        with ThreadPoolExecutor(6) as pool:
            # six calls on two instances take three rounds: the signal lands in the second,
            # long after all six have arrived, even on a loaded machine
            futures = [pool.submit(stub.ModelInfer, request, timeout=60) for _ in range(6)]
            time.sleep(min(one_call * 1.5, 2.0))
            server.proc.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        for response in responses:
            y = np.frombuffer(response.raw_output_contents[0], np.float32)
            np.testing.assert_allclose(y[:4], [0.5**LAYERS] * 4, rtol=1e-6)
        assert server.proc.wait(30) == 0, server.log()
        log = server.log()
        assert "shutting down" in log and "Traceback" not in log, log
    finally:
        channel.close()
        server.stop()
