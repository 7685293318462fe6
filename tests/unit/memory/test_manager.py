"""Admission against a budget and LRU eviction, with a fake clock and fake usage."""

from __future__ import annotations

import pytest

from volley.errors import ResourceExhausted
from volley.memory.manager import MemoryManager, Usage

MB = 1024**2


class Fleet:
    """Fake usage of resident models, and a record of evictions."""

    def __init__(self, manager: MemoryManager) -> None:
        self.manager = manager
        self.use: dict[str, Usage] = {}
        self.evicted: list[str] = []

    def usage(self, name: str) -> Usage:
        return self.use.get(name, Usage(0, 1, False, False))

    async def evict(self, name: str) -> None:
        self.evicted.append(name)
        self.manager.release(name, 1)


def make(
    budget_mb: int = 100, min_residency_s: float = 5.0
) -> tuple[MemoryManager, Fleet, list[float]]:
    now = [1000.0]
    manager = MemoryManager(
        {"cpu": budget_mb * MB}, min_residency_s=min_residency_s, clock=lambda: now[0]
    )
    return manager, Fleet(manager), now


async def test_least_recently_used_is_evicted_first() -> None:
    manager, fleet, now = make()
    for i, name in enumerate("abcd"):
        manager.record(name, 1, "cpu", 25 * MB)
        fleet.use[name] = Usage(last_used_ms=100 - i, served=3, busy=False, pinned=False)
    now[0] += 10
    await manager.admit("e", "cpu", 40 * MB, fleet.usage, fleet.evict)
    assert fleet.evicted == ["d", "c"]  # the two least recently used
    assert manager.held("cpu") == 50 * MB


async def test_pinned_busy_and_fresh_models_are_never_evicted() -> None:
    manager, fleet, now = make()
    manager.record("pinned", 1, "cpu", 30 * MB)
    manager.record("busy", 1, "cpu", 30 * MB)
    now[0] += 10
    manager.record("fresh", 1, "cpu", 30 * MB, on_demand=True)  # for a waiting request
    fleet.use = {
        "pinned": Usage(1, 5, False, True),
        "busy": Usage(1, 5, True, False),
        "fresh": Usage(0, 0, False, False),
    }
    with pytest.raises(ResourceExhausted) as refused:
        await manager.admit("new", "cpu", 20 * MB, fleet.usage, fleet.evict)
    message = refused.value.message
    assert "needs 20.0 MiB on cpu" in message and "budget is 100.0 MiB" in message
    assert "90.0 MiB is held" in message and "pinned 30.0 MiB" in message
    assert fleet.evicted == []
    now[0] += 6  # the minimum residency has passed
    await manager.admit("new", "cpu", 20 * MB, fleet.usage, fleet.evict)
    assert fleet.evicted == ["fresh"]


async def test_larger_than_the_whole_budget() -> None:
    manager, fleet, _ = make()
    with pytest.raises(ResourceExhausted, match=r"more than the whole budget of 100\.0 MiB"):
        await manager.admit("huge", "cpu", 200 * MB, fleet.usage, fleet.evict)


async def test_unbudgeted_devices_admit_everything_and_footprints_are_remembered() -> None:
    manager, fleet, _ = make()
    await manager.admit("g", "gpu0", 10**12, fleet.usage, fleet.evict)
    manager.record("m", 3, "cpu", 7 * MB)
    manager.release("m", 3)
    assert manager.held("cpu") == 0
    assert manager.footprint("m", 3) == 7 * MB
