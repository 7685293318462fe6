"""Micro-benchmark of the batching core: Cython extension against its pure-Python twin.

Measures ns per request for push + plan + pop (batches of 16 one-row requests) and for
gathering 16 requests of 256 float32 each into a preallocated buffer. Prints the best of
several repeats.

Usage: python bench/batchcore_bench.py [--batches N] [--repeat R]
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np

BATCH = 16
ELEMENTS = 256
MODULES = {"cython": "volley.scheduler._batchcore_c", "python": "volley.scheduler._batchcore_py"}


def bench_queue(impl: ModuleType, batches: int) -> float:
    """Return ns per request for push + plan + pop at a steady batch size of 16."""
    q = impl.BatchQueue(BATCH, [BATCH], 1_000_000, 0, [0], [False])
    push, plan, pop = q.push, q.plan, q.pop
    rid = 0
    now = 0
    start = time.perf_counter_ns()
    for _ in range(batches):
        for _ in range(BATCH):
            push(rid, 1, 0, 0, now, 0)
            rid += 1
        n, _wait = plan(now)
        pop(n)
        now += 1000
    elapsed = time.perf_counter_ns() - start
    if len(q):
        raise RuntimeError("queue did not drain")
    return elapsed / (batches * BATCH)


def bench_gather(impl: ModuleType, batches: int) -> float:
    """Return ns per gather of 16 x 256 float32 requests into a preallocated buffer."""
    parts = [np.full(ELEMENTS, i, dtype=np.float32) for i in range(BATCH)]
    dst = np.empty(BATCH * ELEMENTS, dtype=np.float32)
    gather = impl.gather
    start = time.perf_counter_ns()
    for _ in range(batches):
        gather(parts, dst)
    elapsed = time.perf_counter_ns() - start
    np.testing.assert_array_equal(dst, np.concatenate(parts))
    return elapsed / batches


def best(
    fn: Callable[[ModuleType, int], float], impl: ModuleType, batches: int, repeat: int
) -> float:
    """Best (lowest) result of ``repeat`` runs, after one warm-up run."""
    fn(impl, max(batches // 10, 1))
    return min(fn(impl, batches) for _ in range(repeat))


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20_000, help="batches per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    args = parser.parse_args()
    impls = {name: importlib.import_module(module) for name, module in MODULES.items()}
    rows = [
        ("push+plan+pop, ns/request", bench_queue, 1.0),
        ("gather 16x256 f32, ns/call", bench_gather, 1.0),
        ("gather 16x256 f32, ns/request", bench_gather, 1.0 / BATCH),
    ]
    print(f"{'operation':<32}{'cython':>10}{'python':>10}{'py/cy':>8}")
    cache: dict[tuple[str, str], float] = {}
    for label, fn, scale in rows:
        result = {}
        for name, impl in impls.items():
            key = (fn.__name__, name)
            if key not in cache:
                cache[key] = best(fn, impl, args.batches, args.repeat)
            result[name] = cache[key] * scale
        ratio = result["python"] / result["cython"]
        print(f"{label:<32}{result['cython']:>10.1f}{result['python']:>10.1f}{ratio:>7.1f}x")


if __name__ == "__main__":
    main()
