"""Shadow traffic: copies of served requests run on a shadow version, compared, never returned.

A copy is made only after the primary has answered, runs as its own task (the client does not
wait for it) and is dropped, not queued, when the shadow version is behind: when it already
holds ``2 x max(1, max_batch_size)`` requests in flight. Its failures are counted, never raised.
Requests whose tensors live in shared memory are not copied (the client may reuse the region
as soon as it has its answer).
"""

from __future__ import annotations

import asyncio
import logging

from volley.serving import codec
from volley.serving.registry import ModelEntry, ModelVersion
from volley.serving.traffic import compare
from volley.serving.types import InferenceRequest, InferenceResponse
from volley.telemetry.stats import ShadowStats

log = logging.getLogger("volley.shadow")


def _in_shared_memory(request: InferenceRequest) -> bool:
    return any(
        t.parameters and "shared_memory_region" in t.parameters for t in request.inputs
    ) or any(o.parameters and "shared_memory_region" in o.parameters for o in request.outputs or ())


class ShadowRunner:
    """Sends, compares and counts shadow copies for every model."""

    def __init__(self) -> None:
        #: Comparison statistics by (model, primary version, shadow version).
        self.stats: dict[tuple[str, int, int], ShadowStats] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _pair(self, model: str, primary: int, shadow: int) -> ShadowStats:
        key = (model, primary, shadow)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = ShadowStats(model, primary, shadow)
        return stats

    def offer(
        self,
        entry: ModelEntry,
        primary: ModelVersion,
        request: InferenceRequest,
        response: InferenceResponse,
    ) -> None:
        """Copy ``request`` to the entry's shadow version when its policy says so."""
        router = entry.router
        policy = entry.traffic
        if router is None or policy is None or policy.shadow is None:
            return
        target = entry.versions.get(policy.shadow.version)
        if target is None or target is primary or not router.shadowed():
            return
        if _in_shared_memory(request):
            return
        stats = self._pair(entry.name, primary.version, target.version)
        scheduler = target.scheduler
        limit = 2 * max(1, target.spec.max_batch_size)
        if not target.ready or scheduler is None or scheduler.pending >= limit:
            stats.dropped += 1
            return
        stats.sent += 1
        task = asyncio.ensure_future(self._run(target, request, response, stats))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        target: ModelVersion,
        request: InferenceRequest,
        response: InferenceResponse,
        stats: ShadowStats,
    ) -> None:
        try:
            scheduler = target.scheduler
            if scheduler is None:
                stats.failed += 1
                return
            decoded = codec.decode(request, target.spec)
            outputs = await scheduler.infer(decoded.request)
        except asyncio.CancelledError:
            stats.failed += 1
            raise
        except Exception as exc:
            stats.failed += 1
            log.debug("shadow copy to '%s' version %d failed: %s", target.name, target.version, exc)
            return
        primary = {o.name: o.array for o in response.outputs}
        compare(primary, outputs, stats)

    async def stop(self) -> None:
        """Cancel the copies still running."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def views(self, model: str) -> list[dict[str, float | int]]:
        """The comparisons of ``model``'s version pairs."""
        return [s.view() for (name, _, _), s in sorted(self.stats.items()) if name == model]
