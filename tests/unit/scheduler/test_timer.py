"""LoopTimer: fires once, never early, and waits without burning CPU (uvloop and asyncio)."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import uvloop

from volley.scheduler.timer import LoopTimer


async def _wait_once(delay_ns: int) -> tuple[int, int, float]:
    loop = asyncio.get_running_loop()
    fired: list[int] = []
    done = asyncio.Event()

    def callback() -> None:
        fired.append(time.monotonic_ns())
        done.set()

    timer = LoopTimer(loop, callback)
    try:
        cpu0 = time.process_time()
        start = time.monotonic_ns()
        timer.arm(start + delay_ns)
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0.01)
        cpu = time.process_time() - cpu0
    finally:
        timer.close()
    return len(fired), fired[0] - start, cpu


@pytest.mark.parametrize("runner", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_sub_millisecond_wait_is_honoured_once(runner: object) -> None:
    count, waited_ns, _ = runner(_wait_once(300_000))  # type: ignore[operator]
    assert count == 1
    assert waited_ns >= 300_000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")
def test_a_long_wait_costs_almost_no_cpu() -> None:
    count, waited_ns, cpu = uvloop.run(_wait_once(200_000_000))
    assert count == 1 and waited_ns >= 200_000_000
    assert cpu < 0.05, f"waiting 200 ms cost {cpu * 1000:.1f} ms of CPU"


def test_disarm_prevents_the_fire() -> None:
    async def scenario() -> int:
        fired: list[int] = []
        timer = LoopTimer(asyncio.get_running_loop(), lambda: fired.append(1))
        timer.arm(time.monotonic_ns() + 5_000_000)
        timer.disarm()
        await asyncio.sleep(0.03)
        timer.close()
        return len(fired)

    assert uvloop.run(scenario()) == 0


def test_rearming_replaces_the_deadline() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        timer = LoopTimer(loop, lambda: fired.append(time.monotonic_ns()))
        start = time.monotonic_ns()
        timer.arm(start + 1_000_000)
        timer.arm(start + 40_000_000)
        await asyncio.sleep(0.1)
        timer.close()
        assert len(fired) == 1
        return fired[0] - start

    assert uvloop.run(scenario()) >= 40_000_000
