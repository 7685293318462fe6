"""The long fuzz run: ``--requests`` malformed requests (and every tenth a good one) against a
``volley serve`` subprocess, with the generator of ``tests/integration/test_fuzz.py``.

Run: ``.venv/bin/python bench/fuzz.py --requests 1000000 --seed 1 --transport native``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "helpers"))

from fuzzing import fuzz  # noqa: E402

from server_process import EXAMPLE_REPOSITORY, ServerProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--transport", default="native", choices=["native", "grpcio"])
    args = parser.parse_args()
    server = ServerProcess(EXAMPLE_REPOSITORY, env={"VOLLEY_GRPC_TRANSPORT": args.transport})
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(Path(f"/proc/{server.proc.pid}/statm").read_text().split()[1]) * page

    try:
        asyncio.run(fuzz(server.url, args.seed, 2000))
        start, started = rss(), time.monotonic()
        done = 0
        while done < args.requests:
            chunk = min(100_000, args.requests - done)
            codes = asyncio.run(fuzz(server.url, args.seed + done, chunk))
            done += chunk
            assert server.proc.poll() is None, "the server died"
            assert not codes.get("INTERNAL") and not codes.get("UNKNOWN"), codes
            print(f"{done} requests, {time.monotonic() - started:.0f}s, RSS {rss() >> 20} MiB "
                  f"(start {start >> 20} MiB), last chunk {codes}", flush=True)  # fmt: skip
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
