"""Client CPU per request: ``volley perf`` against a plain ``tritonclient.grpc.aio`` loop.

Both run in their own process against the same Volley server, with the same model,
concurrency, request count, warm-up and event loop (uvloop), and both measure the process
CPU time (every thread) over the measured requests only. Repeats alternate the two and the
lowest cost of each is kept. Stores ``bench/results/client_cost.json`` and refreshes the
README tables.

Usage: python bench/client_cost.py [--requests N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from machine import describe  # noqa: E402
from tables import update_readme  # noqa: E402

from server_process import EXAMPLE_REPOSITORY, ServerProcess  # noqa: E402

CASES = [("simple", 8, 1), ("dense_classifier", 8, 1)]
WARMUP = 200


def volley_perf_cost(url: str, model: str, concurrency: int, requests: int, batch: int) -> float:
    """µs of client CPU per request for ``volley perf`` (one window of ``requests``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "perf.json"
        subprocess.run(
            [sys.executable, "-m", "volley.cli", "perf", "-m", model, "-u", url,
             "--concurrency-range", str(concurrency), "--request-count", str(requests),
             "--max-trials", "1", "-b", str(batch), "--warmup-request-count", str(WARMUP),
             "--json", str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        (window,) = json.loads(out.read_text())["levels"][0]["windows"]
    assert window["requests"]["ok"] == requests, window["requests"]
    return float(sum(window["client"]["cpu_s"])) / requests * 1e6


def tritonclient_cost(url: str, model: str, concurrency: int, requests: int, batch: int) -> float:
    """µs of client CPU per request for the plain tritonclient aio loop."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "tritonclient_loop.py"), url, model, str(concurrency),
         str(requests), "--batch-size", str(batch), "--warmup", str(WARMUP)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"] == requests, result
    return float(result["cpu_s"]) / requests * 1e6


def bare_grpc_cost(url: str, model: str, concurrency: int, requests: int) -> float:
    """µs of client CPU per request for a bare grpc.aio loop on pre-serialized bytes."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "bare_grpc_loop.py"), url, model, str(concurrency),
         str(requests), "--warmup", str(WARMUP)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"] == requests // concurrency * concurrency, result
    return float(result["cpu_s"]) / result["ok"] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    server = ServerProcess(EXAMPLE_REPOSITORY)
    cases = []
    try:
        for model, concurrency, batch in CASES:
            ours: list[float] = []
            theirs: list[float] = []
            bare: list[float] = []
            for _ in range(args.repeat):
                if batch == 1:
                    bare.append(bare_grpc_cost(server.url, model, concurrency, args.requests))
                ours.append(volley_perf_cost(server.url, model, concurrency, args.requests, batch))
                theirs.append(
                    tritonclient_cost(server.url, model, concurrency, args.requests, batch)
                )
            case = {
                "model": model,
                "concurrency": concurrency,
                "batch_size": batch,
                "requests": args.requests,
                "volley_perf_us": min(ours),
                "tritonclient_aio_us": min(theirs),
                "ratio": min(ours) / min(theirs),
                "volley_perf_runs_us": ours,
                "tritonclient_aio_runs_us": theirs,
                "bare_grpc_aio_us": min(bare) if bare else None,
            }
            cases.append(case)
            print(
                f"{model} c={concurrency}: volley perf {case['volley_perf_us']:.0f} us/request, "
                f"tritonclient.grpc.aio {case['tritonclient_aio_us']:.0f} us/request "
                f"(ratio {case['ratio']:.2f}), bare grpc.aio {min(bare, default=0):.0f} us/request",
                flush=True,
            )
    finally:
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    result = {
        "kind": "client_cost",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": describe(),
        "warmup": WARMUP,
        "cases": cases,
    }
    (RESULTS / "client_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    update_readme(BENCH / "README.md", RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
