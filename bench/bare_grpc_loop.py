"""A bare ``grpc.aio`` closed loop: pre-serialized ModelInferRequest bytes, responses unparsed.

The least client CPU a Python gRPC client can spend per request; prints one JSON line with the
process CPU seconds over ``requests`` (after ``--warmup``). Usage:
``bare_grpc_loop.py URL MODEL CONCURRENCY REQUESTS [--warmup N]`` (zero inputs, batch 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
from volley.model import dtypes

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _identity(data: bytes) -> bytes:
    return data


async def closed_loop(
    url: str, model: str, concurrency: int, requests: int, warmup: int
) -> dict[str, float]:
    async with grpc.aio.insecure_channel(url) as channel:
        meta = await pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name=model)
        )
        msg = pb.ModelInferRequest(model_name=model)
        for tensor in meta.inputs:
            shape = [1 if d < 0 else d for d in tensor.shape]
            msg.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=shape)
            msg.raw_input_contents.append(np.zeros(shape, dtypes.NUMPY[tensor.datatype]).tobytes())
        payload = msg.SerializeToString()
        call = channel.unary_unary(
            METHOD, request_serializer=_identity, response_deserializer=_identity
        )
        ok = 0

        async def worker(count: int) -> None:
            nonlocal ok
            for _ in range(count):
                await call(payload)
                ok += 1

        await asyncio.gather(*(worker(max(warmup // concurrency, 1)) for _ in range(concurrency)))
        ok = 0
        per = requests // concurrency
        cpu0 = time.process_time()
        await asyncio.gather(*(worker(per) for _ in range(concurrency)))
        cpu = time.process_time() - cpu0
    return {"ok": ok, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("requests", type=int)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(
        closed_loop(args.url, args.model, args.concurrency, args.requests, args.warmup)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
