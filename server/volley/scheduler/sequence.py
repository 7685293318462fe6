"""Triton's sequence batcher: stateful models, one request of a sequence at a time, in order.

A sequence is a run of requests with one correlation id, opened by a request with
``sequence_start`` and closed by one with ``sequence_end`` (or released after
``max_sequence_idle_microseconds`` without a request; a later request on it without START
fails). Its requests execute one after the other, each batched with requests of other
sequences; the server fills the model's control inputs (START, END, READY, CORRID) per row and
keeps implicit state (``state``) between a sequence's requests.

* Direct: each sequence holds a batch slot of one instance until it ends; an instance's batch
  has one row per slot, up to its highest slot with a request, and the slots without a request
  are filler rows with READY false (their outputs are dropped). Sequences beyond the slots wait.
* Oldest: the oldest requests of up to ``max_candidate_sequences`` sequences form a batch on any
  free instance, up to ``max_batch_size`` rows, waiting up to ``max_queue_delay_microseconds``
  for a preferred size.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from volley.backends.base import ModelInstance
from volley.errors import Internal, InvalidArgument, Unavailable, VolleyError
from volley.model.sequence import SequenceSpec
from volley.model.spec import ModelSpec
from volley.scheduler.request import InferRequest, Outputs
from volley.scheduler.timer import LoopTimer
from volley.telemetry.stats import ModelStats

log = logging.getLogger("volley.scheduler")
_now = time.monotonic_ns

Pending = tuple[InferRequest, "asyncio.Future[Outputs]"]


class _Sequence:
    __slots__ = ("busy", "ident", "instance", "last_ns", "queue", "slot", "state")

    def __init__(self, ident: int | str) -> None:
        self.ident = ident
        self.queue: deque[Pending] = deque()
        self.busy = False
        self.instance = -1
        self.slot = -1
        self.state: dict[str, np.ndarray] | None = None
        self.last_ns = _now()


class _Row:
    """One row group of a batch: a sequence's request, or a filler for an empty slot."""

    __slots__ = ("future", "request", "sequence")

    def __init__(
        self,
        sequence: _Sequence | None,
        request: InferRequest,
        future: asyncio.Future[Outputs] | None,
    ) -> None:
        self.sequence = sequence
        self.request = request
        self.future = future


class SequenceBatcher:
    """Queues the requests of a sequence model and runs them in sequence order."""

    def __init__(self, spec: ModelSpec, instances: list[ModelInstance], stats: ModelStats) -> None:
        assert spec.sequence is not None
        self._spec = spec
        self._seq: SequenceSpec = spec.sequence
        self._name = spec.name
        self._instances = list(instances)
        self._stats = stats
        self._batched = spec.max_batch_size > 0
        self._slots = max(1, spec.max_batch_size)
        self._free_slots = [(i, s) for i in range(len(instances)) for s in range(self._slots)]
        self._free_slots.reverse()
        self._waiting: deque[_Sequence] = deque()
        self._sequences: dict[int | str, _Sequence] = {}
        self._idle = set(range(len(instances)))
        self._pool = ThreadPoolExecutor(len(instances), thread_name_prefix=f"volley-{spec.name}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._running = 0
        self._numeric_ids = any(
            c.kind == "corrid" and c.datatype != "BYTES" for c in self._seq.controls
        )

    @property
    def queued(self) -> int:
        """Requests waiting for their turn."""
        return sum(len(s.queue) for s in self._sequences.values())

    @property
    def pending(self) -> int:
        """Requests accepted and not yet answered."""
        return self.queued + self._running

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"sequence-batcher-{self._name}")

    async def infer(self, request: InferRequest) -> Outputs:
        loop, wake = self._loop, self._wake
        if self._closed or loop is None or wake is None:
            raise Unavailable(f"model '{self._name}' is not accepting requests (unloading)")
        ident = request.sequence_id
        if isinstance(ident, str) and self._numeric_ids:
            raise InvalidArgument(
                f"sequence id '{ident}' is a string, but model '{self._name}' takes a numeric "
                "correlation ID (its CORRID control is not TYPE_STRING)"
            )
        sequence = self._sequences.get(ident)
        if sequence is None:
            if not request.sequence_start:
                raise InvalidArgument(
                    f"inference request for sequence {ident} to model '{self._name}' must "
                    "specify the START flag on the first request of the sequence"
                )
            sequence = self._sequences[ident] = _Sequence(ident)
            self._place(sequence)
        future: asyncio.Future[Outputs] = loop.create_future()
        sequence.queue.append((request, future))
        sequence.last_ns = _now()
        wake.set()
        return await future

    def _place(self, sequence: _Sequence) -> None:
        if self._seq.strategy != "direct":
            return
        if self._free_slots:
            sequence.instance, sequence.slot = self._free_slots.pop()
        else:
            self._waiting.append(sequence)

    def _release(self, sequence: _Sequence) -> None:
        self._sequences.pop(sequence.ident, None)
        if sequence.slot >= 0:
            slot = (sequence.instance, sequence.slot)
            sequence.slot = -1
            while self._waiting:
                nxt = self._waiting.popleft()
                if self._sequences.get(nxt.ident) is nxt:
                    nxt.instance, nxt.slot = slot
                    return
            self._free_slots.append(slot)
        elif sequence in self._waiting:
            self._waiting.remove(sequence)

    # -- the scheduling task ----------------------------------------------------------------------
    async def _run(self) -> None:
        loop, wake = self._loop, self._wake
        assert loop is not None and wake is not None
        timer = LoopTimer(loop, wake.set)
        try:
            while not self._closed:
                wake.clear()
                try:
                    delay_ns = self._step()
                except Exception:  # a bug here must not stop every sequence of the model
                    log.exception("model '%s': sequence scheduling failed", self._name)
                    delay_ns = 1_000_000
                if delay_ns >= 0:
                    timer.arm(_now() + delay_ns)
                await wake.wait()
                timer.disarm()
        finally:
            timer.close()

    def _step(self) -> int:
        now = _now()
        next_ns = self._expire(now)
        while self._idle:
            if self._seq.strategy == "direct":
                formed = self._form_direct()
            else:
                formed, wait_ns = self._form_oldest(now)
                if wait_ns >= 0:
                    next_ns = wait_ns if next_ns < 0 else min(next_ns, wait_ns)
            if formed is None:
                break
            self._dispatch(*formed)
        return next_ns

    def _expire(self, now: int) -> int:
        """Release idle sequences; ns until the next one may expire (-1: none)."""
        limit = self._seq.max_idle_ns
        soonest = -1
        for sequence in list(self._sequences.values()):
            if sequence.busy or sequence.queue:
                continue
            left = sequence.last_ns + limit - now
            if left <= 0:
                log.info("model '%s': sequence %s idle, released", self._name, sequence.ident)
                self._release(sequence)
            elif soonest < 0 or left < soonest:
                soonest = left
        return soonest

    def _ready(self, sequence: _Sequence) -> bool:
        return bool(sequence.queue) and not sequence.busy

    def _form_direct(self) -> tuple[int, list[_Row]] | None:
        for instance in sorted(self._idle):
            slots: dict[int, _Sequence] = {
                s.slot: s
                for s in self._sequences.values()
                if s.instance == instance and s.slot >= 0 and self._ready(s)
            }
            if not slots:
                continue
            first = min(slots.values(), key=lambda s: s.queue[0][0].arrival_ns)
            key = first.queue[0][0].shape_key
            chosen = {n: s for n, s in slots.items() if s.queue[0][0].shape_key == key}
            template = first.queue[0][0]
            rows: list[_Row] = []
            for slot in range(max(chosen) + 1):
                sequence = chosen.get(slot)
                if sequence is None:
                    rows.append(_Row(None, template, None))
                else:
                    request, future = sequence.queue.popleft()
                    rows.append(_Row(sequence, request, future))
            return instance, rows
        return None

    def _form_oldest(self, now: int) -> tuple[tuple[int, list[_Row]] | None, int]:
        ready = sorted(
            (s for s in self._sequences.values() if self._ready(s)),
            key=lambda s: s.queue[0][0].arrival_ns,
        )[: self._seq.max_candidates]
        if not ready:
            return None, -1
        key = ready[0].queue[0][0].shape_key
        rows: list[_Row] = []
        total = 0
        for sequence in ready:
            request = sequence.queue[0][0]
            if request.shape_key != key or total + request.rows > self._slots:
                continue
            total += request.rows
            request, future = sequence.queue.popleft()
            rows.append(_Row(sequence, request, future))
        preferred = self._seq.preferred_batch_sizes
        waited = now - rows[0].request.arrival_ns
        delay = self._seq.max_queue_delay_ns
        if preferred and total < max(preferred) and total not in preferred and waited < delay:
            for row in reversed(rows):  # not yet: put them back, in order
                assert row.sequence is not None and row.future is not None
                row.sequence.queue.appendleft((row.request, row.future))
            return None, delay - waited
        return (min(self._idle), rows), -1

    # -- execution ---------------------------------------------------------------------------------
    def _dispatch(self, instance: int, rows: list[_Row]) -> None:
        self._idle.discard(instance)
        real = [r for r in rows if r.sequence is not None]
        for row in real:
            assert row.sequence is not None
            row.sequence.busy = True
        self._running += len(real)
        loop = self._loop
        assert loop is not None
        try:
            inputs = self._inputs(rows)
        except Exception as exc:
            # e.g. a correlation id the CORRID control's datatype cannot hold
            failure = InvalidArgument(f"model '{self._name}': cannot build the batch: {exc}")
            self._complete(instance, rows, (None, failure, 0), _now())
            return
        start_ns = _now()

        def execute() -> None:
            try:
                t0 = _now()
                outputs = self._instances[instance].execute(inputs)
                result: tuple[dict[str, np.ndarray] | None, BaseException | None, int] = (
                    outputs,
                    None,
                    _now() - t0,
                )
            except Exception as exc:
                result = (None, exc, 0)
            loop.call_soon_threadsafe(self._complete, instance, rows, result, start_ns)

        self._pool.submit(execute)

    def _inputs(self, rows: list[_Row]) -> dict[str, np.ndarray]:
        seq, batched = self._seq, self._batched
        parts: dict[str, list[np.ndarray]] = {}
        for row in rows:
            request, sequence = row.request, row.sequence
            n = request.rows if batched else 1
            for name, array in request.inputs.items():
                parts.setdefault(name, []).append(array if sequence else np.zeros_like(array))
            real = sequence is not None
            starting = real and request.sequence_start
            flags = {
                "start": starting,
                "end": real and request.sequence_end,
                "ready": real,
            }
            for control in seq.controls:
                if control.kind == "corrid":
                    ident = sequence.ident if sequence is not None else 0
                    values: list[bool] | list[int | str] = [ident] * n
                else:
                    values = [flags[control.kind]] * n
                parts.setdefault(control.name, []).append(control.tensor(values, batched))
            for state in seq.states:
                held = sequence.state if sequence is not None and not starting else None
                value = held.get(state.input_name) if held is not None else None
                if value is None or (batched and value.shape[0] != n):
                    value = state.initial(n, batched)
                parts.setdefault(state.input_name, []).append(value)
        if not batched:
            return {name: arrays[0] for name, arrays in parts.items()}
        return {name: np.concatenate(arrays) for name, arrays in parts.items()}

    def _complete(
        self,
        instance: int,
        rows: list[_Row],
        result: tuple[dict[str, np.ndarray] | None, BaseException | None, int],
        start_ns: int,
    ) -> None:
        self._idle.add(instance)
        outputs, error, infer_ns = result
        real_rows = 0
        offset = 0
        state_outputs = self._seq.state_outputs
        for row in rows:
            n = row.request.rows if self._batched else 1
            sequence, future = row.sequence, row.future
            if sequence is not None and future is not None:
                self._running -= 1
                sequence.busy = False
                sequence.last_ns = _now()
                if error is not None or outputs is None:
                    if not future.done():
                        future.set_exception(self._failure(error))
                else:
                    mine = {
                        k: (v[offset : offset + n] if self._batched else v)
                        for k, v in outputs.items()
                    }
                    sequence.state = {
                        s.input_name: np.array(mine[s.output_name], copy=True)
                        for s in self._seq.states
                        if s.output_name in mine
                    }
                    if not future.done():
                        future.set_result({k: v for k, v in mine.items() if k not in state_outputs})
                    real_rows += n
                    self._stats.record_request(n, start_ns - row.request.arrival_ns, 0, infer_ns, 0)
                if row.request.sequence_end:
                    self._release(sequence)
            offset += n
        if real_rows:
            self._stats.record_execution(real_rows, 0, infer_ns, 0)
        if self._wake is not None:
            self._wake.set()

    def _failure(self, error: BaseException | None) -> BaseException:
        if isinstance(error, VolleyError):
            return error
        log.error("model '%s' failed to execute a sequence batch", self._name, exc_info=error)
        return Internal(f"model '{self._name}' failed to execute the request")

    async def drain(self, timeout: float) -> bool:
        """Wait until every accepted request is answered (``timeout`` s); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    async def stop(self) -> None:
        """Fail what is queued with UNAVAILABLE, let running batches finish, release threads."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        for sequence in self._sequences.values():
            while sequence.queue:
                _, future = sequence.queue.popleft()
                if not future.done():
                    future.set_exception(Unavailable(f"model '{self._name}' was unloaded"))
        deadline = time.monotonic() + 30
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        self._pool.shutdown(wait=not self._running)
