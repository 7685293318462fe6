"""The two gRPC transports side by side, against the in-process ONNX Runtime limit.

One run measures, on the 256->1024->1024->16 MLP (1 instance, 1 ORT thread,
``max_queue_delay`` 500 µs), with batch-1 requests from ``volley perf``:

* unary ``ModelInfer`` at concurrency 64 and at concurrency 1, and
* ``ModelStreamInfer`` at concurrency 64 (64 streams, one request in flight on each),

for ``--grpc-transport native`` and ``--grpc-transport grpcio``: server CPU µs per request (from
``/proc/<pid>/stat``, all threads), throughput, p50/p99 and errors. The in-process limit is the
same model run back to back by ONNX Runtime at batch 64 on one thread, in the same run.

Run: ``.venv/bin/python bench/transport_cost.py``; results go to
``bench/results/transport_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
sys.path.insert(0, str(BENCH))

from machine import describe  # noqa: E402
from server_cost import build_repository, cpu_seconds, inprocess_rows_per_s, served  # noqa: E402

from server_process import ServerProcess  # noqa: E402


def perf(server: ServerProcess, concurrency: int, count: int, extra: list[str]) -> dict[str, Any]:
    """One ``volley perf`` window; the server's CPU is attributed to the requests it answered."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "perf.json"
        cmd = [
            sys.executable, "-m", "volley.cli", "perf", "-m", "dense", "-u", server.url,
            "--concurrency-range", str(concurrency), "--request-count", str(count),
            "-r", "3", "-s", "100", "--warmup-request-count", str(min(count, 200)),
            "--json", str(out), *extra,
        ]  # fmt: skip
        n0, cpu0 = served(server.url, "dense"), cpu_seconds(server.proc.pid)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        cpu1, n1 = cpu_seconds(server.proc.pid), served(server.url, "dense")
        level = json.loads(out.read_text())["levels"][-1]
    requests = n1 - n0
    return {
        "concurrency": concurrency,
        "requests_per_s": level["requests_per_s"],
        "p50_us": level["latency_us"]["p50"],
        "p99_us": level["latency_us"]["p99"],
        "errors": sum(level.get("errors", {}).values()) if level.get("errors") else 0,
        "server_requests": requests,
        "server_cpu_us_per_request": 1e6 * (cpu1 - cpu0) / requests,
        "client_cpu_us_per_request": level["client"]["cpu_us_per_request"],
    }


def stream_driver(server: ServerProcess, streams: int, count: int) -> dict[str, Any]:
    """``ModelStreamInfer`` at ``streams`` concurrent streams, each one request in flight."""
    code = f"""
import asyncio, sys, time
import grpc, numpy as np
from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc
import uvloop
req = pb.ModelInferRequest(model_name="dense")
req.inputs.add(name="INPUT", datatype="FP32", shape=[1, 256])
req.raw_input_contents.append(np.ones((1, 256), np.float32).tobytes())
async def main():
    async with grpc.aio.insecure_channel("{server.url}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        per = {count} // {streams}
        lat = []
        async def one():
            call = stub.ModelStreamInfer()
            for _ in range(per):
                t = time.monotonic()
                await call.write(req)
                r = await call.read()
                assert not r.error_message, r.error_message
                lat.append(time.monotonic() - t)
            await call.done_writing()
        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range({streams})))
        el = time.monotonic() - t0
        lat.sort()
        print(len(lat) / el, lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6)
uvloop.run(main())
"""
    n0, cpu0 = served(server.url, "dense"), cpu_seconds(server.proc.pid)
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    cpu1, n1 = cpu_seconds(server.proc.pid), served(server.url, "dense")
    return {
        "concurrency": streams,
        "requests_per_s": float(out[0]),
        "p50_us": float(out[1]),
        "p99_us": float(out[2]),
        "errors": 0,
        "server_requests": n1 - n0,
        "server_cpu_us_per_request": 1e6 * (cpu1 - cpu0) / (n1 - n0),
        "client_cpu_us_per_request": float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per c=64 window")
    parser.add_argument("--workers", type=int, default=1, help="volley perf --workers at c=64")
    parser.add_argument("--no-streaming", action="store_true", help="skip the stream windows")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": describe(), "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as tmp:
        repo = build_repository(Path(tmp), instances=1, delay_us=500)
        results["inprocess_rows_per_s_batch64"] = inprocess_rows_per_s(
            repo / "dense" / "1" / "model.onnx", 64, 3.0
        )
        for transport in ("native", "grpcio"):
            server = ServerProcess(repo, extra_args=["--grpc-transport", transport])
            try:
                row: dict[str, Any] = {
                    "unary_c64": perf(server, 64, args.requests, ["--workers", str(args.workers)]),
                    "unary_c1": perf(server, 1, max(args.requests // 4, 200), []),
                }
                if not args.no_streaming:
                    row["stream_c64"] = stream_driver(server, 64, args.requests)
            finally:
                server.stop()
            results[transport] = row
    native, grpcio = results["native"], results["grpcio"]
    results["native_over_grpcio_throughput_c64"] = (
        native["unary_c64"]["requests_per_s"] / grpcio["unary_c64"]["requests_per_s"]
    )
    out = BENCH / "results" / "transport_cost.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    limit = results["inprocess_rows_per_s_batch64"]
    print(f"in-process ORT limit (batch 64, 1 thread): {limit:.0f} inferences/s")
    for transport in ("native", "grpcio"):
        for key, r in results[transport].items():
            print(
                f"{transport:7s} {key:11s} {r['requests_per_s']:8.0f} req/s "
                f"({r['requests_per_s'] / limit:.2f} of limit) p50 {r['p50_us'] / 1000:6.2f} ms "
                f"p99 {r['p99_us'] / 1000:6.2f} ms server CPU "
                f"{r['server_cpu_us_per_request']:6.1f} us/req errors {r['errors']}"
            )
    print(f"throughput native / grpcio at c=64: {results['native_over_grpcio_throughput_c64']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
