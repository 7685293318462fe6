"""volley perf: the closed and open load loops, against a fake ModelInfer callable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest
from volley_perf.pool import split
from volley_perf.worker import LoadWorker, WindowPlan

from volley._proto.inference import grpc_service_pb2 as pb

RESPONSE = pb.ModelInferResponse(
    model_name="m",
    outputs=[pb.ModelInferResponse.InferOutputTensor(name="Y")],
    raw_output_contents=[b"\0" * 4],
).SerializeToString()


class FakeCall:
    """Answers after ``delay_s``; every ``fail_every``-th request fails with UNAVAILABLE."""

    def __init__(
        self, delay_s: float = 0.0, fail_every: int = 0, response: bytes = RESPONSE
    ) -> None:
        self.delay_s = delay_s
        self.fail_every = fail_every
        self.response = response
        self.seen: list[bytes] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.sent_at: list[float] = []

    async def __call__(self, request: bytes, timeout: float | None = None) -> bytes:
        self.seen.append(request)
        index = len(self.seen)
        self.sent_at.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if self.fail_every and index % self.fail_every == 0:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        return self.response


def _worker(call: Callable[..., object], requests: list[bytes] | None = None) -> LoadWorker:
    worker = LoadWorker("127.0.0.1:1", requests or [b"a", b"b", b"c"], frozenset({"Y"}))
    worker._call = call  # type: ignore[assignment]
    return worker


async def test_closed_loop_sends_exactly_the_count_at_the_concurrency() -> None:
    call = FakeCall(delay_s=0.001, fail_every=5)
    result = await _worker(call).run(WindowPlan(concurrency=4, request_count=50))
    assert result.sent == 50 and len(call.seen) == 50
    assert result.ok == 40 and result.errors == {"UNAVAILABLE": 10}
    assert result.first_error == "UNAVAILABLE: down"
    assert len(result.latencies_ns) == 40 and min(result.latencies_ns) >= 1_000_000
    assert call.max_in_flight == 4
    assert call.seen[:3] == [b"a", b"b", b"c"] and set(call.seen) == {b"a", b"b", b"c"}
    assert result.invalid == 0 and result.end_ns > result.begin_ns and result.cpu_ns > 0


async def test_closed_loop_time_window_stops_sending_at_the_deadline() -> None:
    call = FakeCall(delay_s=0.002)
    started = time.monotonic()
    result = await _worker(call).run(WindowPlan(concurrency=2, duration_ns=100_000_000))
    assert 0.09 < time.monotonic() - started < 1.0
    assert result.ok == result.sent > 10
    assert max(call.sent_at) - started < 0.1


async def test_malformed_responses_are_counted() -> None:
    result = await _worker(FakeCall(response=b"\xff\xff")).run(
        WindowPlan(concurrency=1, request_count=3)
    )
    assert result.ok == 3 and result.invalid == 1  # only the first response is sampled


async def test_open_loop_follows_the_schedule() -> None:
    call = FakeCall(delay_s=0.001)
    plan = WindowPlan(concurrency=8, rate=200.0, request_count=40)
    result = await _worker(call).run(plan)
    assert result.sent == result.ok == 40
    span = call.sent_at[-1] - call.sent_at[0]
    # bounds wide enough for a loaded 2-core machine, narrow enough to catch a closed loop
    assert span == pytest.approx(39 / 200, rel=0.5)
    assert result.delayed <= 12


async def test_open_loop_reports_when_it_cannot_keep_up() -> None:
    call = FakeCall(delay_s=0.05)
    plan = WindowPlan(concurrency=1, rate=500.0, request_count=10)
    result = await _worker(call).run(plan)
    assert result.sent == 10 and call.max_in_flight == 1
    assert result.delayed >= 8


async def test_poisson_arrivals_keep_the_average_rate() -> None:
    call = FakeCall()
    plan = WindowPlan(concurrency=16, rate=500.0, poisson=True, request_count=100, seed=1)
    result = await _worker(call).run(plan)
    assert result.sent == result.ok == 100
    gaps = [b - a for a, b in zip(call.sent_at, call.sent_at[1:], strict=False)]
    assert sum(gaps) == pytest.approx(99 / 500, rel=0.5)
    assert max(gaps) > 3 * min(gaps)  # not evenly spaced


def test_split() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert split(2, 4) == [1, 1, 0, 0]
    assert sum(split(1001, 7)) == 1001
