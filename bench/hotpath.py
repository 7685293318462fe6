"""Volley's own Python work per request, without a socket: decode, batcher round trip, encode.

``decode_us`` is the gRPC message -> service request conversion plus validation against the
spec; ``encode_us`` the outputs -> service response -> gRPC message.

Measures in-process, on the ``simple`` example model, with a fake instance that returns
precomputed outputs, so only Volley's code is timed (not the model, not grpcio). Run before and
after a change to the request path: ``.venv/bin/python bench/hotpath.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb
from volley.backends import BackendInspector
from volley.backends.base import ModelInstance
from volley.frontend.grpc import convert
from volley.repository.loader import load_model_config
from volley.scheduler import _batchcore as core
from volley.scheduler.batcher import DynamicBatcher
from volley.serving import codec
from volley.telemetry.stats import ModelStats

BENCH = Path(__file__).resolve().parent
N = 20000


class Precomputed(ModelInstance):
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.outputs


def per_call_us(fn: object, n: int = N) -> float:
    call = fn  # type: ignore[assignment]
    for _ in range(200):
        call()  # type: ignore[operator]
    start = time.process_time()
    for _ in range(n):
        call()  # type: ignore[operator]
    return 1e6 * (time.process_time() - start) / n


async def batcher_us(
    spec: object, request: object, outputs: dict[str, np.ndarray], inline_us: int
) -> float:
    batcher = DynamicBatcher(spec, [Precomputed(outputs)], ModelStats("m", 1), inline_us)  # type: ignore[arg-type]
    batcher.start()
    n = N if inline_us else N // 4
    for _ in range(200):
        await batcher.infer(request)  # type: ignore[arg-type]
    start = time.process_time()
    for _ in range(n):
        await batcher.infer(request)  # type: ignore[arg-type]
    spent = time.process_time() - start
    await batcher.stop()
    return 1e6 * spent / n


def main() -> int:
    spec = load_model_config(
        BENCH.parent / "model_repository" / "simple", BackendInspector().read_signature
    ).spec
    msg = pb.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        msg.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        msg.raw_input_contents.append(np.ones((1, 16), np.int32).tobytes())
    raw = msg.SerializeToString()
    decoded = codec.decode(convert.request_from_pb(msg, 0), spec)
    outputs = {name: np.ones((1, 16), np.int32) for name in ("OUTPUT0", "OUTPUT1")}
    results = {
        "core": core.IMPLEMENTATION,
        "parse_us": per_call_us(lambda: pb.ModelInferRequest.FromString(raw)),
        "decode_us": per_call_us(lambda: codec.decode(convert.request_from_pb(msg, 0), spec)),
        "encode_us": per_call_us(
            lambda: convert.response_to_pb(codec.encode(spec, "1", "", outputs, []))
        ),
    }
    import uvloop

    results["batcher_inline_us"] = uvloop.run(batcher_us(spec, decoded.request, outputs, 100))
    results["batcher_threaded_us"] = uvloop.run(batcher_us(spec, decoded.request, outputs, 0))
    for key, value in results.items():
        print(f"{key:22s} {value:.1f}" if isinstance(value, float) else f"{key:22s} {value}")
    out = BENCH / "results" / "hotpath.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
