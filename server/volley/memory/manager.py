"""Memory accounting per device: who holds what, admission against a budget, LRU eviction.

The manager knows models only by name and version; the lifecycle measures footprints, asks
for admission before a load, and performs the evictions the manager chooses. Eviction rule:
idle models only (nothing queued or executing), least recently used first, never a pinned
one, and never a model loaded for a waiting request before it has served a request or been
resident for ``min_residency_s`` (so two models wanted at once cannot evict each other in turn
before either answers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from volley.errors import ResourceExhausted
from volley.memory.budget import format_bytes

#: How often an admission that waits for a model to become evictable looks again.
_RETRY_S = 0.01


@dataclass(frozen=True, slots=True)
class Usage:
    """How a resident model is used, as the lifecycle sees it at eviction time."""

    #: Wall-clock ms of its last request (0 = none since load).
    last_used_ms: int
    #: Requests it answered since it was loaded.
    served: int
    #: True while it has queued or executing requests, or a load of it is in progress.
    busy: bool
    pinned: bool


@dataclass(slots=True)
class _Held:
    device: str
    size: int
    loaded_at: float
    #: Loaded for a waiting request: protected until it served one or its residency passed.
    protect: bool


class MemoryManager:
    """Budgets by device (``cpu``, ``gpu0`` ...) and what each loaded model version holds."""

    def __init__(
        self,
        budgets: dict[str, int],
        *,
        min_residency_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budgets = dict(budgets)
        self._min_residency_s = min_residency_s
        self._clock = clock
        self._held: dict[tuple[str, int], _Held] = {}
        #: Last measured footprint of each model version, kept across evictions.
        self._footprints: dict[tuple[str, int], int] = {}
        #: Evictions performed.
        self.evictions = 0

    def budgeted(self, device: str) -> bool:
        """True when ``device`` has a budget."""
        return device in self.budgets

    def footprint(self, model: str, version: int) -> int | None:
        """The last measured footprint of that version, if it was ever loaded."""
        return self._footprints.get((model, version))

    def held(self, device: str) -> int:
        """Bytes held on ``device`` by loaded versions."""
        return sum(h.size for h in self._held.values() if h.device == device)

    def holders(self, device: str) -> dict[str, int]:
        """Bytes held on ``device``, by model."""
        out: dict[str, int] = {}
        for (model, _), h in self._held.items():
            if h.device == device:
                out[model] = out.get(model, 0) + h.size
        return out

    def record(
        self, model: str, version: int, device: str, size: int, *, on_demand: bool = False
    ) -> None:
        """A version is loaded and holds ``size`` bytes on ``device`` (``on_demand``: for a
        waiting request, so protected from eviction until it served one)."""
        self._held[(model, version)] = _Held(device, size, self._clock(), on_demand)
        self._footprints[(model, version)] = size

    def release(self, model: str, version: int) -> None:
        """A version was unloaded (its footprint stays known)."""
        self._held.pop((model, version), None)

    async def admit(
        self,
        model: str,
        device: str,
        need: int,
        usage: Callable[[str], Usage],
        evict: Callable[[str], Awaitable[None]],
        wait_s: float = 0.0,
    ) -> None:
        """Make room for ``need`` bytes of ``model`` on ``device`` by evicting idle models.

        When every other model is busy or just loaded for a waiting request, waits up to
        ``wait_s`` for one to become evictable. Raises RESOURCE_EXHAUSTED, naming the numbers,
        when it cannot fit: at once if even evicting every unpinned model would not do.
        """
        budget = self.budgets.get(device)
        if budget is None:
            return
        if need > budget:
            raise ResourceExhausted(
                f"model '{model}' needs {format_bytes(need)} on {device}, more than the whole "
                f"budget of {format_bytes(budget)}"
            )
        deadline = self._clock() + wait_s
        while self.held(device) + need > budget:
            victim = self._victim(device, model, usage)
            if victim is not None:
                await evict(victim)
                self.evictions += 1
                continue
            pinned = sum(
                size
                for name, size in self.holders(device).items()
                if name != model and usage(name).pinned
            )
            own = self.holders(device).get(model, 0)
            if pinned + own + need > budget or self._clock() >= deadline:
                held = ", ".join(
                    f"{name} {format_bytes(size)}"
                    for name, size in sorted(self.holders(device).items())
                )
                raise ResourceExhausted(
                    f"model '{model}' needs {format_bytes(need)} on {device}; the budget is "
                    f"{format_bytes(budget)} and {format_bytes(self.held(device))} is held by "
                    f"models that cannot be evicted now (pinned, busy or just loaded): {held}"
                )
            await asyncio.sleep(_RETRY_S)

    def _victim(self, device: str, loading: str, usage: Callable[[str], Usage]) -> str | None:
        now = self._clock()
        candidates: list[tuple[int, float, str]] = []
        for (model, _), held in self._held.items():
            if held.device != device or model == loading:
                continue
            use = usage(model)
            if use.pinned or use.busy:
                continue
            if held.protect and use.served == 0 and now - held.loaded_at < self._min_residency_s:
                continue
            candidates.append((use.last_used_ms, held.loaded_at, model))
        return min(candidates)[2] if candidates else None
