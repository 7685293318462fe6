"""Drop-in swaps and memory eviction: what they cost the requests around them.

Two scenarios, each against a ``volley serve`` subprocess on 127.0.0.1:

* ``swap``: poll mode, model ``a`` gets a new version every ``--swap-every`` seconds while
  clients send to ``a`` and to a neighbour ``b`` (``--clients`` each). The p50/p99 latency of
  each model inside swap windows (from the drop-in until the new version serves, plus 0.5 s)
  is compared with outside them.
* ``memory``: 12 models of ~40 MB with a CPU budget for four. Latency of requests that hit a
  resident model vs requests that trigger a reload (p50, p99), and the throughput of a
  12-model round robin at concurrency 4 with the budget vs with every model resident.

Run: ``.venv/bin/python bench/model_churn.py``; results go to ``bench/results/model_churn.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "helpers"))
sys.path.insert(0, str(BENCH))

from machine import describe  # noqa: E402

from volley._proto.inference import grpc_service_pb2 as pb  # noqa: E402
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc  # noqa: E402

from onnx_models import add_constant  # noqa: E402
from server_process import ServerProcess  # noqa: E402

CONFIG = """backend: "onnxruntime"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 200 }
optimization { graph { level: 2 } }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def request(model: str) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    msg.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
    return msg


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def write_model(root: Path, name: str, version: int, value: float, padding: int = 0) -> None:
    staging = root / f".staging-{name}-{version}-{time.monotonic_ns()}"
    staging.mkdir(parents=True)
    onnx.save(add_constant(value, padding_bytes=padding), str(staging / "model.onnx"))
    old = int((time.time() - 60) * 1e9)
    os.utime(staging / "model.onnx", ns=(old, old))
    (root / name).mkdir(exist_ok=True)
    if not (root / name / "config.pbtxt").exists():
        (root / name / "config.pbtxt").write_text(CONFIG)
    target = root / name / str(version)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


async def swap_scenario(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    for name in ("a", "b"):
        write_model(root, name, 1, 1.0, padding=8 * 2**20)
    server = ServerProcess(
        root,
        extra_args=["--model-control-mode", "poll", "--repository-poll-secs", "0.2",
                    "--repository-settle-secs", "0.2"],
    )  # fmt: skip
    samples: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    errors = 0
    windows: list[tuple[float, float]] = []
    try:
        async with grpc.aio.insecure_channel(server.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            stop = time.monotonic() + args.seconds

            async def client(model: str) -> None:
                nonlocal errors
                while time.monotonic() < stop:
                    started = time.monotonic()
                    try:
                        await stub.ModelInfer(request(model), timeout=10)
                    except grpc.aio.AioRpcError:
                        errors += 1
                        continue
                    samples[model].append((started, time.monotonic() - started))

            async def swapper() -> None:
                version = 1
                await asyncio.sleep(args.swap_every)
                while time.monotonic() + args.swap_every < stop:
                    version += 1
                    began = time.monotonic()
                    write_model(root, "a", version, float(version), padding=8 * 2**20)
                    while True:
                        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="a"))
                        if list(meta.versions) == [str(version)]:
                            break
                        await asyncio.sleep(0.02)
                    windows.append((began, time.monotonic() + 0.5))
                    await asyncio.sleep(args.swap_every)

            tasks = [client(m) for m in ("a", "b") for _ in range(args.clients)]
            await asyncio.gather(*tasks, swapper())
    finally:
        server.stop()

    def inside(t: float) -> bool:
        return any(lo <= t <= hi for lo, hi in windows)

    out: dict[str, Any] = {"swaps": len(windows), "errors": errors}
    for model in ("a", "b"):
        during = [lat * 1e3 for t, lat in samples[model] if inside(t)]
        outside = [lat * 1e3 for t, lat in samples[model] if not inside(t)]
        out[model] = {
            "requests": len(samples[model]),
            "during_swaps": {
                "n": len(during),
                "p50_ms": pct(during, 50),
                "p99_ms": pct(during, 99),
            },
            "outside": {"n": len(outside), "p50_ms": pct(outside, 50), "p99_ms": pct(outside, 99)},
        }
    return out


async def round_robin(url: str, models: int, seconds: float, clients: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stop = time.monotonic() + seconds

        async def client(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    await stub.ModelInfer(request(f"m{i % models}"), timeout=60)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append((time.monotonic() - started) * 1e3)
                i += 1

        started = time.monotonic()
        await asyncio.gather(*(client(k * 3) for k in range(clients)))
        elapsed = time.monotonic() - started
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "errors": errors,
    }


async def memory_scenario(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    for i in range(12):
        write_model(root, f"m{i}", 1, float(i), padding=40 * 2**20)
    out: dict[str, Any] = {}
    for label, extra in (
        ("budget_for_4", ["--memory-budget", "cpu=210MiB"]),
        ("all_resident", []),
    ):
        server = ServerProcess(root, extra_args=extra)
        try:
            if label == "budget_for_4":
                async with grpc.aio.insecure_channel(server.url) as channel:
                    stub = pb_grpc.GRPCInferenceServiceStub(channel)
                    hits, reloads = [], []
                    for _ in range(30):  # the same model again and again: resident
                        started = time.monotonic()
                        await stub.ModelInfer(request("m11"), timeout=60)
                        hits.append((time.monotonic() - started) * 1e3)
                    for i in range(30):  # a different evicted model each time: a reload
                        started = time.monotonic()
                        await stub.ModelInfer(request(f"m{i % 8}"), timeout=60)
                        reloads.append((time.monotonic() - started) * 1e3)
                out["resident_hit_ms"] = {"p50": pct(hits, 50), "p99": pct(hits, 99)}
                out["reload_ms"] = {"p50": pct(reloads, 50), "p99": pct(reloads, 99)}
            out[label] = await round_robin(server.url, 12, args.seconds, 4)
        finally:
            server.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each window")
    parser.add_argument("--swap-every", type=float, default=1.5, help="seconds between swaps")
    parser.add_argument("--clients", type=int, default=2, help="clients per model (swap)")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": describe(), "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as tmp:
        results["swap"] = asyncio.run(swap_scenario(args, Path(tmp) / "swap"))
        results["memory"] = asyncio.run(memory_scenario(args, Path(tmp) / "memory"))
    (BENCH / "results" / "model_churn.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
