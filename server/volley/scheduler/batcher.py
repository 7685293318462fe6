"""The asyncio side of dynamic batching: futures, timers and executor threads.

The batching core (``volley.scheduler._batchcore``, configured by ``queue.QueueSettings``)
decides which queued requests form the next batch and when; this module owns the futures, the
instance threads and the timers, and reports each batch to the model's statistics. A model
without dynamic batching goes through the same path with batches of one request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np

from volley.backends.base import ModelInstance
from volley.errors import DeadlineExceeded, Internal, Unavailable, VolleyError
from volley.model.spec import ModelSpec
from volley.scheduler import _batchcore as core
from volley.scheduler.queue import QueueSettings
from volley.scheduler.request import InferRequest, Outputs
from volley.scheduler.timer import LoopTimer
from volley.telemetry.stats import ModelStats

log = logging.getLogger("volley.scheduler")

_now = time.monotonic_ns
#: Executions measured on threads before a model may switch to inline execution.
_WARM_EXECUTIONS = 8


class _Batch:
    """One formed batch on its way through an instance (and, if ordered, the release queue)."""

    __slots__ = (
        "error",
        "errors",
        "futures",
        "instance",
        "outputs",
        "requests",
        "start_ns",
        "timings",
    )

    def __init__(
        self,
        requests: list[InferRequest],
        futures: list[asyncio.Future[Outputs]],
        instance: ModelInstance,
    ) -> None:
        self.requests = requests
        self.futures = futures
        self.instance = instance
        self.start_ns = _now()
        self.outputs: list[Outputs] | None = None
        self.error: BaseException | None = None
        #: Per request, when the batch failed and its requests were rerun one by one.
        self.errors: list[BaseException | None] | None = None
        self.timings = (0, 0, 0)


class DynamicBatcher:
    """Queues requests of one model version and runs batches on its instances in parallel."""

    def __init__(
        self,
        spec: ModelSpec,
        instances: list[ModelInstance],
        stats: ModelStats,
        inline_threshold_us: int = 0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self._spec = spec
        self._name = spec.name
        self._instances = list(instances)
        self._free: list[ModelInstance] = list(instances)
        self._stats = stats
        batching = spec.batching
        self._settings = QueueSettings(spec)
        self._queue = self._settings.queue
        self._ordered = batching is not None and batching.preserve_ordering
        self._release: deque[_Batch] = deque()
        #: Batches handed to an instance and not yet completed.
        self._executing: set[_Batch] = set()
        self._pending: dict[int, tuple[InferRequest, asyncio.Future[Outputs]]] = {}
        self._next_rid = 0
        self._running = 0
        self._pool = ThreadPoolExecutor(
            max_workers=len(self._instances), thread_name_prefix=f"volley-{spec.name}"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._draining = False
        self._stop_timeout_s = stop_timeout_s
        # Batches whose execution takes less than a thread hand-off costs run on the loop.
        self._inline_threshold_ns = inline_threshold_us * 1000
        self._avg_infer_ns = 0.0
        self._executions = 0
        #: Set once a traced request arrives: only then do batches look for traces.
        self._tracing_seen = False

    # -- frontend side --------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Requests waiting in the queue."""
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Requests accepted and not yet answered (queued or executing)."""
        return len(self._pending) + self._running

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"batcher-{self._name}")

    async def infer(self, request: InferRequest) -> Outputs:
        loop, wake = self._loop, self._wake
        if self._stopping or self._draining or loop is None or wake is None:
            raise Unavailable(f"model '{self._name}' is not accepting requests (unloading)")
        rid = self._next_rid
        self._next_rid = rid + 1
        if request.trace is not None:
            self._tracing_seen = True
        settings = self._settings
        level, expire_ns = settings.level_and_expiry(request)
        key = settings.shape_key(request)
        rows = settings.rows(request)
        if not self._queue.push(rid, rows, level, key, _now(), expire_ns):
            raise Unavailable(
                f"Exceeds maximum queue size: model '{self._name}' queue is full, try again later"
            )
        future: asyncio.Future[Outputs] = loop.create_future()
        self._pending[rid] = (request, future)
        wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            if self._queue.remove(rid):
                self._pending.pop(rid, None)
            raise

    # -- the batcher task -------------------------------------------------------------------------
    async def _run(self) -> None:
        loop, wake = self._loop, self._wake
        assert loop is not None and wake is not None
        timer = LoopTimer(loop, wake.set)
        try:
            while not self._stopping:
                wake.clear()
                delay_ns = self._step()
                if self._stopping:
                    break
                if delay_ns < 0:
                    await wake.wait()
                else:
                    timer.arm(_now() + delay_ns)
                    await wake.wait()
                    timer.disarm()
        finally:
            timer.close()

    def _step(self) -> int:
        """Expire, then dispatch every batch that is ready while instances are free.

        Returns how many ns to sleep before looking again (-1: until something happens).
        """
        queue = self._queue
        now = _now()
        for rid in queue.expire(now):
            _, future = self._pending.pop(rid)
            if not future.done():
                future.set_exception(
                    DeadlineExceeded(
                        f"Request timeout expired: the request waited longer than its queue "
                        f"timeout for model '{self._name}'"
                    )
                )
        while self._free:
            n, wait_ns = queue.plan(now)
            if n == 0:
                return wait_ns
            self._dispatch(queue.pop(n))
            now = _now()
        next_expiry = queue.next_expiry_ns()
        return max(next_expiry - now, 0) if next_expiry else -1

    def _dispatch(self, rids: list[int]) -> None:
        requests: list[InferRequest] = []
        futures: list[asyncio.Future[Outputs]] = []
        pending = self._pending
        for rid in rids:
            request, future = pending.pop(rid)
            if not future.done():
                requests.append(request)
                futures.append(future)
        if not requests:
            return
        batch = _Batch(requests, futures, self._free.pop())
        self._executing.add(batch)
        self._running += len(requests)
        if self._ordered:
            self._release.append(batch)
        if self._inline and _nbytes(requests) <= _INLINE_MAX_BYTES:
            _run_batch(batch)
            self._complete(batch)
        else:
            self._pool.submit(self._execute, batch)

    @property
    def _inline(self) -> bool:
        return (
            self._executions >= _WARM_EXECUTIONS and self._avg_infer_ns < self._inline_threshold_ns
        )

    # -- executor thread ------------------------------------------------------------------------
    def _execute(self, batch: _Batch) -> None:
        _run_batch(batch)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._complete, batch)

    # -- back on the loop: one callback per batch -------------------------------------------------
    def _complete(self, batch: _Batch) -> None:
        self._executing.discard(batch)
        infer_ns = batch.timings[1]
        if self._executions < _WARM_EXECUTIONS:
            self._avg_infer_ns += (infer_ns - self._avg_infer_ns) / (self._executions + 1)
        else:
            self._avg_infer_ns += (infer_ns - self._avg_infer_ns) / _WARM_EXECUTIONS
        self._executions += 1
        self._free.append(batch.instance)
        self._running -= len(batch.requests)
        if self._ordered:
            while self._release and (
                self._release[0].outputs is not None or self._release[0].error is not None
            ):
                self._resolve(self._release.popleft())
        else:
            self._resolve(batch)
        if self._wake is not None:
            self._wake.set()

    def _failure(self, error: BaseException) -> BaseException:
        if isinstance(error, VolleyError):
            return error
        log.error("model '%s' failed to execute a batch", self._name, exc_info=error)
        return Internal(f"model '{self._name}' failed to execute the request")

    def _resolve(self, batch: _Batch) -> None:
        if self._tracing_seen:
            self._trace(batch)
        if batch.error is not None:
            error = self._failure(batch.error)
            for future in batch.futures:
                if not future.done():
                    future.set_exception(error)
            return
        if batch.errors is not None:
            log.warning(
                "model '%s': a batch of %d requests failed; rerun one by one, %d failed",
                self._name,
                len(batch.requests),
                sum(e is not None for e in batch.errors),
            )
            for future, culprit in zip(batch.futures, batch.errors, strict=True):
                if culprit is not None and not future.done():
                    future.set_exception(self._failure(culprit))
        assert batch.outputs is not None
        input_ns, infer_ns, output_ns = batch.timings
        stats = self._stats
        rows = 0
        for request, future, outputs in zip(
            batch.requests, batch.futures, batch.outputs, strict=True
        ):
            if future.done():
                continue
            rows += request.rows
            stats.record_request(
                request.rows, batch.start_ns - request.arrival_ns, input_ns, infer_ns, output_ns
            )
            future.set_result(outputs)
        if rows:
            stats.record_execution(rows, input_ns, infer_ns, output_ns)

    def _trace(self, batch: _Batch) -> None:
        """The queue spans of the batch's traced requests and one batch span linked to them."""
        traced = [(r.trace, r.arrival_ns) for r in batch.requests if r.trace is not None]
        if not traced:
            return
        first = traced[0][0]
        first.tracing.batch(
            traced,
            self._name,
            str(self._stats.version),
            len(batch.requests),
            sum(r.rows for r in batch.requests),
            batch.start_ns,
            _now(),
            error=None if batch.error is None else type(batch.error).__name__,
        )

    async def drain(self, timeout: float) -> bool:
        """Refuse new requests and wait until every accepted one, queued ones included, is
        answered; False if that took longer than ``timeout`` seconds."""
        self._draining = True
        deadline = time.monotonic() + timeout
        while self._pending or self._running:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    async def stop(self) -> None:
        """Refuse new requests, fail queued ones, let running batches finish."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable(f"model '{self._name}' was unloaded"))
        self._pending.clear()
        deadline = time.monotonic() + self._stop_timeout_s
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if self._running:
            # a backend call that never returns must not hang unloads or shutdown
            log.error(
                "model '%s': %d request(s) still executing after %.0fs; abandoning them",
                self._name,
                self._running,
                self._stop_timeout_s,
            )
            for batch in self._executing:
                for future in batch.futures:
                    if not future.done():
                        future.set_exception(Unavailable(f"model '{self._name}' was unloaded"))
            self._pool.shutdown(wait=False, cancel_futures=True)
            return
        self._pool.shutdown(wait=True)


#: A batch with more input bytes than this never runs on the loop, however fast the model.
_INLINE_MAX_BYTES = 1 << 20


def _nbytes(requests: list[InferRequest]) -> int:
    return sum(a.nbytes for r in requests for a in r.inputs.values())


def _run_batch(batch: _Batch) -> None:
    """Gather, execute and split one batch, recording its timings or its error."""
    try:
        t0 = _now()
        inputs = _gather(batch.requests)
        t1 = _now()
        outputs = batch.instance.execute(inputs)
        t2 = _now()
        batch.outputs = _split(outputs, batch.requests)
        batch.timings = (t1 - t0, t2 - t1, _now() - t2)
    except Exception as exc:
        if len(batch.requests) == 1:
            batch.error = exc
            return
        _isolate(batch)


def _isolate(batch: _Batch) -> None:
    """A batch of several requests failed: run each alone, so only the culprits fail."""
    t0 = _now()
    outputs: list[Outputs] = []
    errors: list[BaseException | None] = []
    for request in batch.requests:
        try:
            outputs.append(batch.instance.execute(request.inputs))
            errors.append(None)
        except Exception as exc:
            outputs.append({})
            errors.append(exc)
    batch.outputs, batch.errors = outputs, errors
    batch.timings = (0, _now() - t0, 0)


def _gather(requests: list[InferRequest]) -> dict[str, np.ndarray]:
    """Concatenate the requests' inputs along the batch dimension (no copy for one request)."""
    if len(requests) == 1:
        return requests[0].inputs
    merged: dict[str, np.ndarray] = {}
    for name, first in requests[0].inputs.items():
        parts = [r.inputs[name] for r in requests]
        rows = sum(p.shape[0] for p in parts)
        if first.dtype.hasobject:
            merged[name] = np.concatenate(parts)
            continue
        out = np.empty((rows, *first.shape[1:]), dtype=first.dtype)
        sources: list[Any] = [np.ascontiguousarray(p) for p in parts]
        core.gather(sources, cast(Any, out))
        merged[name] = out
    return merged


def _split(outputs: dict[str, np.ndarray], requests: list[InferRequest]) -> list[Outputs]:
    """Each request's rows of every output, as views."""
    if len(requests) == 1:
        return [outputs]
    rows = [r.rows for r in requests]
    per_request: list[Outputs] = [{} for _ in requests]
    for name, array in outputs.items():
        for target, view in zip(per_request, core.split_rows(array, rows), strict=True):
            target[name] = view
    return per_request
