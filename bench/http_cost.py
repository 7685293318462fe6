"""Server CPU per request over REST (KServe v2 HTTP) and over gRPC, on the same server.

Starts ``volley serve`` (``ServerProcess``) on the example repository and drives the ``simple``
model (two INT32 [1, 16] inputs) at a fixed concurrency for a bounded number of requests:

* over HTTP with a small aiohttp client in a subprocess, sending what ``tritonclient.http``
  sends with ``binary_data=True`` (JSON header + raw inputs, binary outputs), and the same with
  JSON ``data`` inputs and outputs;
* over gRPC with ``volley perf`` (``--request-count``).

The server's CPU time (utime + stime of every thread, ``/proc/<pid>/stat``) before and after each
run, divided by the requests it answered, is its cost per request.

``--stacks`` also measures the HTTP server candidates that were weighed for the frontend, each
running Volley's own ``HttpApi`` on the server's event loop beside gRPC, started by this script
in server mode (``--serve-candidate``): ``aiohttp`` (low-level ``web.Server``), ``uvicorn``
(httptools, ``Server.startup`` on the running loop), ``granian-rsgi`` and ``granian-asgi``
(granian's embedded server: Rust I/O threads, handlers on the running loop).

Run: ``.venv/bin/python bench/http_cost.py [--requests 4000] [--stacks volley,aiohttp,...]``;
results go to ``bench/results/http_cost.json``. Keep runs short: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
sys.path.insert(0, str(BENCH))

from machine import describe  # noqa: E402

from server_process import EXAMPLE_REPOSITORY, ServerProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MODEL = "simple"
CANDIDATES = ("aiohttp", "uvicorn", "granian-rsgi", "granian-asgi")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def served(url: str) -> int:
    """Requests the server has answered successfully for the model so far (over HTTP)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{url}/v2/models/{MODEL}/stats") as reply:
        doc = json.loads(reply.read())
    return int(doc["model_stats"][0]["inference_stats"]["success"]["count"])


# -- the HTTP client (a subprocess) -------------------------------------------------------------
def request_body(kind: str) -> tuple[bytes, dict[str, str]]:
    """A ``simple`` request as ``tritonclient.http`` sends it (binary or JSON tensors)."""
    import numpy as np

    x = np.arange(16, dtype=np.int32).reshape(1, 16)
    if kind == "json":
        doc = {
            "inputs": [
                {"name": n, "shape": [1, 16], "datatype": "INT32", "data": x.ravel().tolist()}
                for n in ("INPUT0", "INPUT1")
            ],
            "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT1"}],
        }
        return json.dumps(doc).encode(), {"Content-Type": "application/json"}
    doc = {
        "inputs": [
            {
                "name": n,
                "shape": [1, 16],
                "datatype": "INT32",
                "parameters": {"binary_data_size": x.nbytes},
            }
            for n in ("INPUT0", "INPUT1")
        ],
        "outputs": [
            {"name": n, "parameters": {"binary_data": True}} for n in ("OUTPUT0", "OUTPUT1")
        ],
    }
    header = json.dumps(doc).encode()
    return header + x.tobytes() * 2, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


async def drive(url: str, kind: str, count: int, concurrency: int) -> dict[str, Any]:
    """Send ``count`` requests with ``concurrency`` in flight; count errors."""
    import aiohttp

    left = count
    errors = 0
    if kind == "live":
        method, target, body, headers = "GET", f"http://{url}/v2/health/live", b"", {}
    else:
        method, target = "POST", f"http://{url}/v2/models/{MODEL}/infer"
        body, headers = request_body(kind)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            async with session.request(method, target, data=body, headers=headers) as reply:
                await reply.read()
                if reply.status != 200:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    # as tritonclient: no Accept-Encoding (aiohttp would ask for gzip by default)
    skip = ("Accept-Encoding",)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=skip) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"elapsed_s": elapsed, "errors": errors}


def run_http(url: str, pid: int, kind: str, count: int, concurrency: int) -> dict[str, Any]:
    """Warm up, then one measured run of the client subprocess; server CPU per request."""
    client = [sys.executable, __file__, "--drive", url, "--kind", kind]
    conc = ["--concurrency", str(concurrency)]
    subprocess.run([*client, "--count", str(min(count, 500)), *conc], check=True)
    n0, cpu0 = served(url), cpu_seconds(pid)
    out = subprocess.run(
        [*client, "--count", str(count), *conc], check=True, capture_output=True, text=True
    )
    cpu1, n1 = cpu_seconds(pid), served(url)
    result = json.loads(out.stdout)
    requests = count if kind == "live" else n1 - n0
    return {
        "requests": requests,
        "errors": result["errors"],
        "requests_per_s": round(count / result["elapsed_s"], 1),
        "server_cpu_us_per_request": round((cpu1 - cpu0) / max(requests, 1) * 1e6, 1),
    }


def run_grpc(url: str, http_url: str, pid: int, count: int, concurrency: int) -> dict[str, Any]:
    """``volley perf`` over gRPC: one window of ``count`` requests after a warm-up."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "perf.json"
        cmd = [
            sys.executable, "-m", "volley.cli", "perf", "-m", MODEL, "-u", url,
            "--concurrency-range", str(concurrency), "--request-count", str(count),
            "-r", "1", "-s", "100", "--warmup-request-count", str(min(count, 500)),
            "--json", str(out),
        ]  # fmt: skip
        n0, cpu0 = served(http_url), cpu_seconds(pid)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        cpu1, n1 = cpu_seconds(pid), served(http_url)
        level = json.loads(out.read_text())["levels"][-1]
    requests = n1 - n0
    return {
        "requests": requests,
        "errors": sum(level.get("errors", {}).values()) if level.get("errors") else 0,
        "requests_per_s": round(level["requests_per_s"], 1),
        "server_cpu_us_per_request": round((cpu1 - cpu0) / max(requests, 1) * 1e6, 1),
    }


# -- candidate servers (server mode) ------------------------------------------------------------
Stop = Callable[[], Awaitable[None]]


async def start_candidate(stack: str, api: Any, host: str) -> tuple[int, Stop]:
    """Serve ``api`` (an ``HttpApi``) with one candidate stack on the running loop."""
    from volley.frontend.http.boundary import BodyTooLarge

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]

    if stack == "aiohttp":
        from aiohttp import web

        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            async def read(limit: int) -> bytes:
                if (request.content_length or 0) > limit:
                    raise BodyTooLarge("too large")
                return await request.read()

            reply = await api.handle(request.method, request.path, request.headers, read)
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

        runner = web.ServerRunner(web.Server(handler, auto_decompress=False), access_log=None)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        return port, runner.cleanup

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def read(limit: int) -> bytes:
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge("too large")
                chunks.append(chunk)
                more = message.get("more_body", False)
            return b"".join(chunks)

        reply = await api.handle(scope["method"], scope["path"], headers, read)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in reply.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    if stack == "uvicorn":
        import uvicorn

        config = uvicorn.Config(
            asgi, loop="none", http="httptools", lifespan="off", access_log=False,
            log_level="warning", interface="asgi3",
        )  # fmt: skip
        server = uvicorn.Server(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])

        async def stop_uvicorn() -> None:
            server.should_exit = True
            await server.shutdown(sockets=[sock])

        return port, stop_uvicorn

    if stack.startswith("granian"):
        from granian.constants import Interfaces
        from granian.server.embed import Server as Granian

        class Rsgi:
            async def __rsgi__(self, scope: Any, proto: Any) -> None:
                async def read(limit: int) -> bytes:
                    return bytes(await proto())

                reply = await api.handle(scope.method, scope.path, scope.headers, read)
                proto.response_bytes(reply.status, list(reply.headers.items()), reply.body)

        sock.close()  # granian binds its own socket: reuse the free port found above
        rsgi = stack == "granian-rsgi"
        granian = Granian(
            Rsgi() if rsgi else asgi,
            address=host,
            port=port,
            interface=Interfaces.RSGI if rsgi else Interfaces.ASGINL,
            log_enabled=False,
            websockets=False,
        )
        task = asyncio.ensure_future(granian.serve())
        await asyncio.sleep(0.5)

        async def stop_granian() -> None:
            granian.stop()
            await task

        return port, stop_granian
    raise SystemExit(f"unknown stack {stack}")


async def serve_candidate(stack: str, port_file: Path) -> None:
    """Server mode: Volley (gRPC) with a candidate HTTP stack on the same loop."""
    from volley.app import VolleyServer
    from volley.frontend.http.api import HttpApi
    from volley.settings import ServerSettings

    settings = ServerSettings(
        model_repository=[EXAMPLE_REPOSITORY], grpc_address="127.0.0.1", grpc_port=0,
        metrics_port=0, allow_http=False,
    )  # fmt: skip
    server = VolleyServer(settings)
    grpc_port = await server.start()
    http_port, stop_http = await start_candidate(stack, HttpApi(server.service), "127.0.0.1")
    port_file.write_text(f"{grpc_port}\n{http_port}\n")
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    await stop_http()
    await server.stop(grace=1)


class CandidateProcess:
    """This script in server mode, as ``ServerProcess`` runs ``volley serve``."""

    def __init__(self, stack: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="volley-bench-")
        port_file = Path(self._dir.name) / "ports"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-candidate", stack, "--port-file", str(port_file)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while len(port_file.read_text().split()) < 2 if port_file.exists() else True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"candidate server {stack} did not start")
            time.sleep(0.05)
        grpc_port, http_port = port_file.read_text().split()
        self.url = f"127.0.0.1:{grpc_port}"
        self.http_url = f"127.0.0.1:{http_port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        self._dir.cleanup()


# -- the run ------------------------------------------------------------------------------------
def measure(
    url: str, http_url: str, pid: int, count: int, concurrency: int, grpc: bool
) -> dict[str, Any]:
    """HTTP binary, HTTP JSON, a health check (the stack alone, no model) and gRPC, one after
    the other on one server."""
    rows = {
        "http_binary": run_http(http_url, pid, "binary", count, concurrency),
        "http_json": run_http(http_url, pid, "json", count, concurrency),
        "http_live": run_http(http_url, pid, "live", count, concurrency),
    }
    if grpc:
        rows["grpc"] = run_grpc(url, http_url, pid, count, concurrency)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per measured run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--stacks",
        default="volley",
        help=f"comma-separated: volley (volley serve) and candidates {', '.join(CANDIDATES)}",
    )
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "http_cost.json")
    # internal modes
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="binary", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve-candidate", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import uvloop

    if args.drive:
        print(json.dumps(uvloop.run(drive(args.drive, args.kind, args.count, args.concurrency))))
        return 0
    if args.serve_candidate:
        uvloop.run(serve_candidate(args.serve_candidate, args.port_file))
        return 0

    results: dict[str, Any] = {
        "machine": describe(),
        "model": MODEL,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "stacks": {},
    }
    for stack in args.stacks.split(","):
        print(f"{stack} ...", flush=True)
        if stack == "volley":
            server = ServerProcess(EXAMPLE_REPOSITORY)
            try:
                results["stacks"][stack] = measure(
                    server.url, server.http_url, server.proc.pid, args.requests,
                    args.concurrency, grpc=True,
                )  # fmt: skip
            finally:
                server.stop()
        else:
            candidate = CandidateProcess(stack)
            try:
                results["stacks"][stack] = measure(
                    candidate.url, candidate.http_url, candidate.proc.pid, args.requests,
                    args.concurrency, grpc=True,
                )  # fmt: skip
            finally:
                candidate.stop()
        print(json.dumps(results["stacks"][stack], indent=1), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
