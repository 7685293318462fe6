"""The load loops of one worker: closed-loop concurrency slots or an open-loop schedule.

Requests are serialized once by the caller; each call hands the same ``bytes`` to a raw
``unary_unary`` callable (no serializer) and gets ``bytes`` back (no deserializer). Only a
sample of the responses is parsed, to check that they are well formed.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import grpc

from volley._proto.inference import grpc_service_pb2 as pb

from .target import CHANNEL_OPTIONS

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
#: A ``ModelStreamInferResponse`` whose first field is ``error_message`` (field 1, length).
_STREAM_ERROR_TAG = 0x0A
#: A request sent more than this long after its scheduled time counts as delayed.
LATE_NS = 2_000_000
#: Responses ``0, 1024, 2048, ...`` of each window are parsed and checked.
VALIDATE_MASK = 1023
#: Safety bound on a count-based window that the server answers too slowly.
COUNT_WINDOW_CAP_NS = 300 * 1_000_000_000


@dataclass(frozen=True)
class WindowPlan:
    """One measurement window as one worker runs it."""

    #: Closed loop: requests kept in flight. Open loop: the most requests in flight.
    concurrency: int
    #: Open loop: requests per second this worker sends; 0 for the closed loop.
    rate: float = 0.0
    #: Open loop: exponential gaps (Poisson arrivals) instead of constant ones.
    poisson: bool = False
    #: Requests to send; 0 means the window is ``duration_ns`` long instead.
    request_count: int = 0
    duration_ns: int = 0
    #: ``time.monotonic_ns()`` at which to start (workers of a window start together).
    start_ns: int = 0
    seed: int = 0
    #: Per-request deadline in seconds (``None``: none).
    timeout_s: float | None = None
    #: Closed loop over one ``ModelStreamInfer`` stream per slot instead of unary calls.
    streaming: bool = False


@dataclass
class WorkerResult:
    """What one worker measured in one window."""

    #: Latencies of the successful requests, nanoseconds, in completion order.
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    sent: int = 0
    ok: int = 0
    #: Failed requests by gRPC status name.
    errors: dict[str, int] = field(default_factory=dict)
    #: Open loop: requests sent later than scheduled by more than ``LATE_NS``.
    delayed: int = 0
    #: Sampled responses that did not parse or did not match the request.
    invalid: int = 0
    #: Status and details of the first failed request, for error messages.
    first_error: str = ""
    begin_ns: int = 0
    end_ns: int = 0
    #: CPU time of the worker's process over the window (all its threads).
    cpu_ns: int = 0


class _Window:
    """Mutable state the slots of one window share (one event loop, so no locks)."""

    __slots__ = ("deadline_ns", "gap_s", "next_send_ns", "remaining", "result", "rng")

    def __init__(self, plan: WindowPlan, begin_ns: int) -> None:
        self.result = WorkerResult(begin_ns=begin_ns)
        if plan.request_count > 0:
            self.remaining = plan.request_count
            self.deadline_ns = begin_ns + COUNT_WINDOW_CAP_NS
        else:
            self.remaining = 1 << 62
            self.deadline_ns = begin_ns + plan.duration_ns
        self.next_send_ns = float(begin_ns)
        self.gap_s = 1.0 / plan.rate if plan.rate > 0 else 0.0
        self.rng = random.Random(plan.seed) if plan.poisson else None


class LoadWorker:
    """Sends pre-serialized ``ModelInfer`` requests over its own channel."""

    def __init__(self, url: str, requests: list[bytes], output_names: frozenset[str]) -> None:
        if not requests:
            raise ValueError("no requests to send")
        self._url = url
        self._requests = requests
        self._outputs = output_names
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] | None = None
        self._stream: grpc.aio.StreamStreamMultiCallable[bytes, bytes] | None = None
        #: Requests completed by the current window so far (read by progress displays).
        self.completed = 0

    async def open(self) -> None:
        """Create the channel; call from the event loop that will run the windows."""
        self._channel = grpc.aio.insecure_channel(self._url, options=CHANNEL_OPTIONS)
        self._call = self._channel.unary_unary(
            MODEL_INFER, request_serializer=None, response_deserializer=None
        )
        self._stream = self._channel.stream_stream(
            MODEL_STREAM_INFER, request_serializer=None, response_deserializer=None
        )

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def run(self, plan: WindowPlan) -> WorkerResult:
        """Run one window and return its measurements."""
        if self._call is None:
            raise RuntimeError("LoadWorker.open() was not called")
        delay_ns = plan.start_ns - time.monotonic_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / 1e9)
        self.completed = 0
        cpu_begin = time.process_time_ns()
        window = _Window(plan, time.monotonic_ns())
        if plan.streaming:
            slot = self._stream_slot
        else:
            slot = self._open_slot if plan.rate > 0 else self._closed_slot
        await asyncio.gather(*(slot(window, plan.timeout_s) for _ in range(plan.concurrency)))
        result = window.result
        result.end_ns = time.monotonic_ns()
        result.cpu_ns = time.process_time_ns() - cpu_begin
        return result

    async def _closed_slot(self, w: _Window, timeout: float | None) -> None:
        clock = time.monotonic_ns
        deadline = w.deadline_ns
        while w.remaining > 0:
            start = clock()
            if start >= deadline:
                break
            w.remaining -= 1
            await self._send(w.result, start, timeout)

    async def _stream_slot(self, w: _Window, timeout: float | None) -> None:
        """Closed loop on one stream: write a request, read its response, again."""
        assert self._stream is not None
        result = w.result
        requests = self._requests
        clock = time.monotonic_ns
        deadline = w.deadline_ns
        call: Any = self._stream(timeout=None)  # type: ignore[call-arg]
        try:
            while w.remaining > 0:
                start = clock()
                if start >= deadline:
                    break
                w.remaining -= 1
                request = requests[result.sent % len(requests)]
                result.sent += 1
                await call.write(request)
                response = await call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                    self._stream_failed(result, "UNAVAILABLE", "the stream ended early")
                    return
                assert isinstance(response, bytes)
                if response and response[0] == _STREAM_ERROR_TAG:
                    error = pb.ModelStreamInferResponse.FromString(response)
                    code = error.infer_response.parameters["triton_error_code"].string_param
                    self._stream_failed(result, code or "STREAM_ERROR", error.error_message)
                    continue
                result.latencies_ns.append(clock() - start)
                if not result.ok & VALIDATE_MASK:
                    self._validate_stream(result, response)
                result.ok += 1
                self.completed += 1
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            self._failed(result, exc)

    def _stream_failed(self, result: WorkerResult, code: str, details: str) -> None:
        if not result.errors:
            result.first_error = f"{code}: {details}"
        result.errors[code] = result.errors.get(code, 0) + 1
        self.completed += 1

    def _validate_stream(self, result: WorkerResult, response: bytes) -> None:
        try:
            message = pb.ModelStreamInferResponse.FromString(response)
        except Exception:
            result.invalid += 1
            return
        self._validate(result, message.infer_response.SerializeToString())

    async def _send(self, result: WorkerResult, start: int, timeout: float | None) -> None:
        """Send the next prepared request and record its latency, status and validity."""
        call = self._call
        assert call is not None
        requests = self._requests
        request = requests[result.sent % len(requests)]
        result.sent += 1
        try:
            response = await call(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self._failed(result, exc)
            return
        result.latencies_ns.append(time.monotonic_ns() - start)
        if not result.ok & VALIDATE_MASK:
            self._validate(result, response)
        result.ok += 1
        self.completed += 1

    async def _open_slot(self, w: _Window, timeout: float | None) -> None:
        result = w.result
        clock = time.monotonic_ns
        deadline = w.deadline_ns
        rng = w.rng
        while w.remaining > 0:
            scheduled = w.next_send_ns
            if scheduled >= deadline:
                break
            w.remaining -= 1
            gap = rng.expovariate(1.0 / w.gap_s) if rng is not None else w.gap_s
            w.next_send_ns = scheduled + gap * 1e9
            now = clock()
            if scheduled > now:
                await asyncio.sleep((scheduled - now) / 1e9)
            start = clock()
            if start >= deadline:
                break
            if start - scheduled > LATE_NS:
                result.delayed += 1
            await self._send(result, start, timeout)

    def _failed(self, result: WorkerResult, exc: grpc.aio.AioRpcError) -> None:
        name = exc.code().name
        if not result.errors:
            result.first_error = f"{name}: {exc.details()}"
        result.errors[name] = result.errors.get(name, 0) + 1
        self.completed += 1

    def _validate(self, result: WorkerResult, response: bytes) -> None:
        try:
            message = pb.ModelInferResponse.FromString(response)
        except Exception:
            result.invalid += 1
            return
        names = {t.name for t in message.outputs}
        raw = len(message.raw_output_contents)
        mismatched = raw and raw != len(message.outputs)
        unknown = self._outputs and not names <= self._outputs
        if mismatched or not names or unknown:
            result.invalid += 1
