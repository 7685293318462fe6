"""A plain ``tritonclient.grpc.aio`` closed loop, measured for client CPU per request.

Run as its own process (tritonclient's generated protobuf modules cannot share a process
with Volley's). Prints one JSON line: requests, ok, cpu_s, wall_s.

Usage: python bench/tritonclient_loop.py URL MODEL CONCURRENCY REQUESTS [--batch-size B]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import triton_to_np_dtype


async def closed_loop(
    url: str, model: str, concurrency: int, requests: int, batch: int, warmup: int, seed: int
) -> dict[str, float]:
    client = grpcclient.InferenceServerClient(url)
    try:
        meta = await client.get_model_metadata(model, as_json=True)
        config = await client.get_model_config(model, as_json=True)
        batching = int(config["config"].get("max_batch_size", 0)) > 0
        rng = np.random.default_rng(seed)
        inputs = []
        for tensor in meta["inputs"]:
            dims = [int(d) for d in tensor["shape"]]
            shape = (
                [batch, *[max(d, 1) for d in dims[1:]]] if batching else [max(d, 1) for d in dims]
            )
            dtype = triton_to_np_dtype(tensor["datatype"])
            if np.issubdtype(dtype, np.floating):
                data = rng.random(shape).astype(dtype)
            else:
                data = rng.integers(0, 100, shape).astype(dtype)
            infer_input = grpcclient.InferInput(tensor["name"], shape, tensor["datatype"])
            infer_input.set_data_from_numpy(data)
            inputs.append(infer_input)
        for _ in range(warmup):
            await client.infer(model, inputs)
        remaining = requests
        ok = 0

        async def slot() -> None:
            nonlocal remaining, ok
            while remaining > 0:
                remaining -= 1
                result = await client.infer(model, inputs)
                if result is not None:
                    ok += 1

        cpu = time.process_time()
        wall = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(concurrency)))
        return {
            "requests": requests,
            "ok": ok,
            "cpu_s": time.process_time() - cpu,
            "wall_s": time.perf_counter() - wall,
        }
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("requests", type=int)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    coro = closed_loop(
        args.url,
        args.model,
        args.concurrency,
        args.requests,
        args.batch_size,
        args.warmup,
        args.seed,
    )
    if args.no_uvloop:
        result = asyncio.run(coro)
    else:
        import uvloop

        result = uvloop.run(coro)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
