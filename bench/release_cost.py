"""What releases cost: routing (split + labels), a 100% shadow, and response cache hits.

The dense 256->1024->1024->16 model of ``server_cost.py`` (versions 1 and 2, identical), batch-1
requests from ``volley perf`` naming no version, served by ``volley serve`` under:

* ``plain``: no traffic file (the baseline);
* ``split``: ``labels: {stable: 1, canary: 2}`` and ``split: {1: 50, 2: 50}``;
* ``shadow``: ``split: {1: 100}`` and ``shadow: {version: 2, percent: 100}``;
* ``cached``: ``response_cache { enable: true }`` with ``--cache-config local,size=64MiB``
  (``volley perf`` repeats its input, so after the first request every one is a hit).

Each at concurrency 4 (latency, the machine not saturated) and 64 (throughput), in
alternating rounds. Run: ``.venv/bin/python bench/release_cost.py [--rounds 2]``; results go to
``bench/results/release_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from server_cost import ServerProcess, build_repository, describe, measure  # noqa: E402

CONFIGS = {
    "plain": ("", False),
    "split": ("labels: {stable: 1, canary: 2}\nsplit: {1: 50, 2: 50}\n", False),
    "shadow": ("split: {1: 100}\nshadow: {version: 2, percent: 100}\n", False),
    "cached": ("", True),
}


def repository(root: Path, traffic: str, cached: bool) -> Path:
    build_repository(root, instances=2, delay_us=2000)
    dense = root / "dense"
    shutil.copytree(dense / "1", dense / "2")
    if traffic:
        (dense / "traffic.yaml").write_text(traffic)
    config = dense / "config.pbtxt"
    text = config.read_text() + "version_policy: { all { } }\n"
    if cached:
        text += "response_cache { enable: true }\n"
    config.write_text(text)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repos = {
            name: repository(Path(tmp) / name, traffic, cached)
            for name, (traffic, cached) in CONFIGS.items()
        }
        for round_no in range(args.rounds):
            for name, repo in repos.items():
                extra = ["--cache-config", "local,size=64MiB"] if CONFIGS[name][1] else []
                server = ServerProcess(repo, extra_args=extra)
                try:
                    for concurrency in (4, 64):
                        r = measure(server, "dense", 1, concurrency, args.requests)
                        runs.setdefault(f"{name} c{concurrency}", []).append(r)
                        print(
                            f"round {round_no + 1} {name:7s} c{concurrency:<3d} "
                            f"{r['requests_per_s']:7.0f} req/s p50 {r['p50_us']:7.0f} us "
                            f"p99 {r['p99_us']:7.0f} us server CPU "
                            f"{r['server_cpu_us_per_request']:6.1f} us/req",
                            flush=True,
                        )
                finally:
                    server.stop()

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    summary: dict[str, Any] = {}
    for key in runs:
        name, level = key.split()
        base = f"plain {level}"
        summary[key] = {
            "requests_per_s": med(key, "requests_per_s"),
            "p50_us": med(key, "p50_us"),
            "p99_us": med(key, "p99_us"),
            "server_cpu_us_per_request": med(key, "server_cpu_us_per_request"),
            "throughput_vs_plain": med(key, "requests_per_s") / med(base, "requests_per_s"),
            "p99_vs_plain": med(key, "p99_us") / med(base, "p99_us"),
        }
    out = BENCH / "results" / "release_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": describe(),
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "rounds": args.rounds,
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )
    print()
    for key, s in summary.items():
        print(
            f"{key:12s} {s['requests_per_s']:7.0f} req/s (x{s['throughput_vs_plain']:.2f}) "
            f"p50 {s['p50_us']:7.0f} us p99 {s['p99_us']:7.0f} us (x{s['p99_vs_plain']:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
