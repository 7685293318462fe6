"""The floor under any Python gRPC server on this machine: an empty unary echo handler.

Starts an echo server (``grpc.aio`` on uvloop, ``grpc.aio`` on asyncio, and the thread-pool
``grpc.server``) in a subprocess, drives it from another process with a ``grpc.aio`` client at
several concurrencies, and reports the server's CPU time per request from ``/proc/<pid>/stat``.
Volley's own per-request cost is what its server spends above this floor.

Run: ``.venv/bin/python bench/grpc_floor.py``; results go to ``bench/results/grpc_floor.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from machine import describe  # noqa: E402

METHOD = "/volley.bench.Echo/Call"
PAYLOAD = b"x" * 1024


def _handlers(fn: object) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "volley.bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(fn)}
    )


def serve(mode: str, port: int) -> None:
    """Run an echo server until killed."""
    address = f"127.0.0.1:{port}"
    if mode == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        server.add_generic_rpc_handlers([_handlers(lambda request, context: request)])
        server.add_insecure_port(address)
        server.start()
        server.wait_for_termination()
        return

    async def echo(request: bytes, context: object) -> bytes:
        return request

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([_handlers(echo)])
        server.add_insecure_port(address)
        await server.start()
        await server.wait_for_termination()

    if mode == "aio-uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(port: int, pid: int, concurrency: int, requests: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)

        async def worker(count: int) -> None:
            for _ in range(count):
                await call(PAYLOAD)

        await asyncio.gather(*(worker(20) for _ in range(concurrency)))
        per_worker = max(requests // concurrency, 1)
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
        t1, cpu1 = time.perf_counter(), cpu_seconds(pid)
    n = per_worker * concurrency
    return {"requests_per_s": n / (t1 - t0), "server_cpu_us_per_request": 1e6 * (cpu1 - cpu0) / n}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, object] = {"machine": describe(), "date": time.strftime("%Y-%m-%d %H:%M")}
    rows: list[dict[str, object]] = []
    for mode in ("aio-uvloop", "aio-asyncio", "sync"):
        port = free_port()
        cmd = [sys.executable, __file__, "--serve", mode, "--port", str(port)]
        proc = subprocess.Popen(cmd)
        try:
            time.sleep(1.5)
            for concurrency in levels:
                row = {"server": mode, "concurrency": concurrency}
                row.update(asyncio.run(drive(port, proc.pid, concurrency, args.requests)))
                rows.append(row)
                print(
                    f"{mode:12s} c={concurrency:3d} {row['requests_per_s']:7.0f} req/s  "
                    f"server CPU {row['server_cpu_us_per_request']:6.1f} us/request",
                    flush=True,
                )
        finally:
            proc.kill()
            proc.wait()
    results["levels"] = rows
    out = BENCH / "results" / "grpc_floor.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
