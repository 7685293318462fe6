"""One request at a time per instance, no batching across requests."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from volley.backends.base import ModelInstance
from volley.errors import Internal, Unavailable, VolleyError
from volley.scheduler.request import InferRequest, Outputs
from volley.telemetry.stats import ModelStats

log = logging.getLogger("volley.scheduler")


class DirectScheduler:
    """Runs each request on the next free instance, in arrival order."""

    def __init__(self, name: str, instances: list[ModelInstance], stats: ModelStats) -> None:
        self._name = name
        self._instances = instances
        self._stats = stats
        self._free: asyncio.Queue[ModelInstance] | None = None
        self._pool = ThreadPoolExecutor(max_workers=len(instances), thread_name_prefix=name)
        self._inflight = 0
        self._stopping = False

    def start(self) -> None:
        self._free = asyncio.Queue()
        for inst in self._instances:
            self._free.put_nowait(inst)

    @property
    def inflight(self) -> int:
        return self._inflight

    async def infer(self, request: InferRequest) -> Outputs:
        if self._stopping or self._free is None:
            raise Unavailable(f"model '{self._name}' is unloading")
        self._inflight += 1
        try:
            inst = await self._free.get()
            try:
                start = time.monotonic_ns()
                loop = asyncio.get_running_loop()
                try:
                    outputs = await loop.run_in_executor(self._pool, inst.execute, request.inputs)
                except VolleyError:
                    raise
                except Exception as exc:
                    log.exception("model '%s' failed to execute", self._name)
                    raise Internal(f"model '{self._name}' failed to execute the request") from exc
                end = time.monotonic_ns()
            finally:
                self._free.put_nowait(inst)
            self._stats.record_execution(request.rows, 0, end - start, 0)
            self._stats.record_request(request.rows, start - request.arrival_ns, 0, end - start, 0)
            return outputs
        finally:
            self._inflight -= 1

    async def stop(self) -> None:
        self._stopping = True
        while self._inflight:
            await asyncio.sleep(0.005)
        self._pool.shutdown(wait=True)
