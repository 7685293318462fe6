"""Raw tensor contents vs system shared memory, 1 MB and 16 MB tensors, one run.

Serves ``Y = X + 1`` over an FP32 ``[1, W]`` tensor (W = 256 Ki for 1 MB, 4 Mi for 16 MB) in
``volley serve`` and sends the same requests with ``tritonclient.grpc`` two ways: input and
output as raw contents in the messages, or input and output in registered system shared memory
regions (the client writes the input into its region and reads the output from its region).
Server CPU per request comes from ``/proc/<pid>/stat`` around each window; windows of the two
ways alternate over ``--rounds`` so machine drift hits both alike.

Run: ``.venv/bin/python bench/shm_cost.py [--rounds 3] [--concurrency 2]``; results go to
``bench/results/shm_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
sys.path.insert(0, str(BENCH))

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.utils.shared_memory as shm  # noqa: E402
from machine import describe  # noqa: E402

from onnx_models import add_constant, make_model_dir  # noqa: E402
from server_process import ServerProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SIZES = {"1MB": 1 << 18, "16MB": 1 << 22}
CONFIG = 'backend: "onnxruntime"\nmax_batch_size: 1\n'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Slot:
    """One client thread: its connection and, for shared memory, its two regions."""

    def __init__(self, url: str, model: str, width: int, use_shm: bool, tag: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.model = model
        self.x = np.random.default_rng(0).standard_normal((1, width)).astype(np.float32)
        nbytes = self.x.nbytes
        self.input = grpcclient.InferInput("X", [1, width], "FP32")
        self.output = grpcclient.InferRequestedOutput("Y")
        self.handles: list[Any] = []
        if use_shm:
            names = (f"in_{tag}", f"out_{tag}")
            for name in names:
                key = f"/volley_bench_{name}_{os.getpid()}"
                self.handles.append(shm.create_shared_memory_region(name, key, nbytes))
                self.client.register_system_shared_memory(name, key, nbytes)
            self.input.set_shared_memory(names[0], nbytes)
            self.output.set_shared_memory(names[1], nbytes)
        else:
            self.input.set_data_from_numpy(self.x)

    def one(self) -> None:
        if self.handles:
            shm.set_shared_memory_region(self.handles[0], [self.x])
            self.client.infer(self.model, [self.input], outputs=[self.output])
            y = shm.get_contents_as_numpy(self.handles[1], np.float32, list(self.x.shape))
        else:
            y = self.client.infer(self.model, [self.input], outputs=[self.output]).as_numpy("Y")
        assert y is not None and y.shape == self.x.shape

    def close(self) -> None:
        self.client.unregister_system_shared_memory()
        for handle in self.handles:
            shm.destroy_shared_memory_region(handle)
        self.client.close()


def window(server: ServerProcess, slots: list[Slot], count: int) -> dict[str, float]:
    per_slot = max(1, count // len(slots))
    for slot in slots:
        slot.one()  # warm
    cpu0, start = cpu_seconds(server.proc.pid), time.perf_counter()
    threads = [
        threading.Thread(target=lambda s=s: [s.one() for _ in range(per_slot)]) for s in slots
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(server.proc.pid) - cpu0
    n = per_slot * len(slots)
    return {"requests_per_s": n / elapsed, "server_cpu_us_per_request": 1e6 * cpu / n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--requests-1mb", type=int, default=400)
    parser.add_argument("--requests-16mb", type=int, default=40)
    args = parser.parse_args()
    counts = {"1MB": args.requests_1mb, "16MB": args.requests_16mb}
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        for label, width in SIZES.items():
            make_model_dir(repo, f"add_{label}", add_constant(1.0, width), config=CONFIG)
        server = ServerProcess(repo, extra_args=["--grpc-max-message-size", str(64 << 20)])
        try:
            for round_no in range(args.rounds):
                for label, width in SIZES.items():
                    for mode in ("raw", "shm"):
                        slots = [
                            Slot(server.url, f"add_{label}", width, mode == "shm", f"{label}{i}")
                            for i in range(args.concurrency)
                        ]
                        try:
                            result = window(server, slots, counts[label])
                        finally:
                            for slot in slots:
                                slot.close()
                        runs.setdefault(f"{label} {mode}", []).append(result)
                        print(
                            f"round {round_no + 1} {label:5s} {mode}: "
                            f"{result['requests_per_s']:8.1f} req/s, server CPU "
                            f"{result['server_cpu_us_per_request']:8.1f} us/req",
                            flush=True,
                        )
        finally:
            server.stop()

    summary: dict[str, Any] = {}
    for label in SIZES:
        raw, mem = runs[f"{label} raw"], runs[f"{label} shm"]

        def med(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in rows)

        summary[label] = {
            "raw_requests_per_s": med(raw, "requests_per_s"),
            "shm_requests_per_s": med(mem, "requests_per_s"),
            "raw_server_cpu_us": med(raw, "server_cpu_us_per_request"),
            "shm_server_cpu_us": med(mem, "server_cpu_us_per_request"),
            "throughput_shm_over_raw": med(mem, "requests_per_s") / med(raw, "requests_per_s"),
            "server_cpu_shm_over_raw": med(mem, "server_cpu_us_per_request")
            / med(raw, "server_cpu_us_per_request"),
        }
    results = {
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "workload": "Y = X + 1, FP32 [1, W], tritonclient.grpc, input and output both ways",
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "summary": summary,
        "runs": runs,
    }
    out = BENCH / "results" / "shm_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    for label, s in summary.items():
        print(
            f"{label:5s} raw {s['raw_requests_per_s']:7.1f} req/s {s['raw_server_cpu_us']:8.1f} "
            f"us/req | shm {s['shm_requests_per_s']:7.1f} req/s {s['shm_server_cpu_us']:8.1f} "
            f"us/req | throughput x{s['throughput_shm_over_raw']:.2f}, "
            f"server CPU x{s['server_cpu_shm_over_raw']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
