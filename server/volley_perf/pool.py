"""Where the load runs: in this process, or spread over worker processes.

Each worker process has its own event loop (uvloop when installed), channel and
:class:`~volley_perf.worker.LoadWorker`; the coordinator sends it one
:class:`~volley_perf.worker.WindowPlan` per window and gets a ``WorkerResult`` back.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import PerfError
from .worker import LoadWorker, WindowPlan, WorkerResult

#: How often a worker process publishes its completed-request count for progress display.
REPORT_PERIOD_S = 0.25
#: How long to wait for a worker process to start and open its channel.
START_TIMEOUT_S = 60.0


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when installed and wanted, else asyncio's."""
    if use_uvloop:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
        except ImportError:
            pass
    return asyncio.new_event_loop()


class Driver(Protocol):
    """Runs windows on a fixed number of workers."""

    workers: int

    async def start(self) -> None:
        """Get the workers ready."""

    async def run_window(self, plans: Sequence[WindowPlan | None]) -> list[WorkerResult]:
        """Run one window, one plan per worker (``None``: that worker sits this one out)."""
        ...

    def completed(self) -> int:
        """Requests completed so far in the current window, over all workers."""
        ...

    async def close(self) -> None:
        """Stop the workers."""


class InProcessDriver:
    """One worker on the caller's event loop."""

    workers = 1

    def __init__(self, url: str, requests: list[bytes], output_names: frozenset[str]) -> None:
        self._worker = LoadWorker(url, requests, output_names)

    async def start(self) -> None:
        """Open the worker's channel."""
        await self._worker.open()

    async def run_window(self, plans: Sequence[WindowPlan | None]) -> list[WorkerResult]:
        """Run the window in this process."""
        plan = plans[0]
        return [await self._worker.run(plan)] if plan is not None else []

    def completed(self) -> int:
        """Requests completed so far in the current window."""
        return self._worker.completed

    async def close(self) -> None:
        """Close the worker's channel."""
        await self._worker.close()


class ProcessDriver:
    """``workers`` worker processes, started with ``spawn`` (grpc does not survive ``fork``)."""

    def __init__(
        self,
        url: str,
        requests: list[bytes],
        output_names: frozenset[str],
        workers: int,
        use_uvloop: bool = True,
    ) -> None:
        self.workers = workers
        context = multiprocessing.get_context("spawn")
        self._counters = context.RawArray("q", workers)
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._procs: list[Any] = []
        for index in range(workers):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker_main,
                args=(child, url, requests, output_names, use_uvloop, self._counters, index),
                name=f"volley-perf-worker-{index}",
                daemon=True,
            )
            self._pipes.append(parent)
            self._procs.append(proc)

    async def start(self) -> None:
        """Start the processes and wait until each has opened its channel."""
        for proc in self._procs:
            proc.start()
        for reply in await asyncio.gather(
            *(self._receive(p, START_TIMEOUT_S) for p in self._pipes)
        ):
            if reply != "ready":
                raise PerfError(f"a worker process failed to start: {reply}")

    async def run_window(self, plans: Sequence[WindowPlan | None]) -> list[WorkerResult]:
        """Send each worker its plan and collect the results."""
        for index in range(self.workers):
            self._counters[index] = 0
        active = [
            (pipe, plan) for pipe, plan in zip(self._pipes, plans, strict=True) if plan is not None
        ]
        for pipe, plan in active:
            pipe.send(plan)
        replies = await asyncio.gather(*(self._receive(pipe, None) for pipe, _ in active))
        results: list[WorkerResult] = []
        for reply in replies:
            if not isinstance(reply, WorkerResult):
                raise PerfError(f"a worker process failed: {reply}")
            results.append(reply)
        return results

    def completed(self) -> int:
        """Requests completed so far in the current window, as the workers last published."""
        return int(sum(self._counters))

    async def close(self) -> None:
        """Ask every worker to stop, then make sure it has."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        loop = asyncio.get_running_loop()
        for proc in self._procs:
            if proc.pid is None:
                continue
            await loop.run_in_executor(None, proc.join, 10)
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(None, proc.join, 5)
        for pipe in self._pipes:
            pipe.close()

    async def _receive(
        self, pipe: multiprocessing.connection.Connection, timeout_s: float | None
    ) -> object:
        loop = asyncio.get_running_loop()

        def wait() -> object:
            if timeout_s is not None and not pipe.poll(timeout_s):
                return "timed out"
            try:
                return pipe.recv()
            except EOFError:
                return "the process exited"

        return await loop.run_in_executor(None, wait)


def _worker_main(
    pipe: multiprocessing.connection.Connection,
    url: str,
    requests: list[bytes],
    output_names: frozenset[str],
    use_uvloop: bool,
    counters: Any,
    index: int,
) -> None:
    """Body of a worker process: run each plan received until ``None`` arrives."""
    loop = new_event_loop(use_uvloop)
    asyncio.set_event_loop(loop)
    worker = LoadWorker(url, requests, output_names)
    try:
        loop.run_until_complete(worker.open())
        pipe.send("ready")
        while True:
            plan = pipe.recv()
            if plan is None:
                break
            publisher = loop.create_task(_publish(worker, counters, index))
            try:
                result = loop.run_until_complete(worker.run(plan))
            finally:
                publisher.cancel()
                loop.run_until_complete(asyncio.gather(publisher, return_exceptions=True))
            pipe.send(result)
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception as exc:  # reported to the coordinator, which prints one line
        with contextlib.suppress(OSError):
            pipe.send(f"{type(exc).__name__}: {exc}")
    finally:
        loop.run_until_complete(worker.close())
        loop.close()


async def _publish(worker: LoadWorker, counters: Any, index: int) -> None:
    while True:
        counters[index] = worker.completed
        await asyncio.sleep(REPORT_PERIOD_S)


def split(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal non-negative integers (larger ones first)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def start_time_ns(lead_s: float) -> int:
    """A common ``time.monotonic_ns()`` start for the workers of a window, ``lead_s`` ahead."""
    return time.monotonic_ns() + int(lead_s * 1e9)
