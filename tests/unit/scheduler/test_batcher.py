"""The dynamic batcher end to end with a fake instance, over both batching-core implementations."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import volley.scheduler._batchcore_py as pycore
from volley.backends.base import ModelInstance
from volley.errors import DeadlineExceeded, Unavailable
from volley.model.spec import BatchingSpec, ModelSpec, QueuePolicy, TensorSpec
from volley.scheduler import _batchcore_c as _batchcore
from volley.scheduler import batcher as batcher_module
from volley.scheduler.batcher import DynamicBatcher
from volley.scheduler.request import InferRequest
from volley.telemetry.stats import ModelStats

IMPLEMENTATIONS = {
    "cython": SimpleNamespace(
        BatchQueue=_batchcore.BatchQueue, gather=_batchcore.gather, split_rows=_batchcore.split_rows
    ),
    "python": SimpleNamespace(
        BatchQueue=pycore.BatchQueue, gather=pycore.gather, split_rows=pycore.split_rows
    ),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def core_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(batcher_module, "core", IMPLEMENTATIONS[request.param])
    return str(request.param)


def model(x: np.ndarray) -> np.ndarray:
    """Row-wise: each output row depends only on its input row, so batching cannot change it."""
    return x * 2.0 + x.sum(axis=1, keepdims=True)


class FakeInstance(ModelInstance):
    """Computes ``model`` and records every batch it ran (its row count and its priorities)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[list[float]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["X"]
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            self.batches.append(list(x[:, 0]))
        return {"Y": model(x)}


async def until_running(fake: FakeInstance) -> None:
    """Wait (bounded) until the instance has started executing a batch."""
    for _ in range(5000):
        if fake.entered.is_set():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the instance never started")


def spec(max_batch: int, batching: BatchingSpec | None) -> ModelSpec:
    return ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=max_batch,
        inputs=(TensorSpec("X", "FP32", (3,)),),
        outputs=(TensorSpec("Y", "FP32", (3,)),),
        batching=batching,
    )


def request(x: np.ndarray, priority: int = 0, timeout_us: int = 0) -> InferRequest:
    return InferRequest(
        inputs={"X": x},
        rows=x.shape[0],
        shape_key=("X", 3),
        priority=priority,
        timeout_us=timeout_us,
        arrival_ns=time.monotonic_ns(),
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 3), st.floats(0, 0.002)),
        min_size=1,
        max_size=40,
    ),
    max_batch=st.integers(4, 12),
    delay_us=st.sampled_from([0, 300, 2000]),
    instances=st.integers(1, 3),
)
def test_every_response_equals_the_unbatched_output(
    core_impl: str,
    data: list[tuple[int, int, float]],
    max_batch: int,
    delay_us: int,
    instances: int,
) -> None:
    batching = BatchingSpec(
        preferred_batch_sizes=(max_batch // 2, max_batch),
        max_queue_delay_us=delay_us,
        priority_levels=3,
        default_priority_level=2,
    )
    fakes = [FakeInstance(delay_s=0.001) for _ in range(instances)]
    stats = ModelStats("m", 1)

    async def scenario() -> None:
        batcher = DynamicBatcher(spec(max_batch, batching), list(fakes), stats)
        batcher.start()
        rng = np.random.default_rng(len(data))
        tasks, inputs = [], []
        for rows, priority, gap in data:
            x = rng.standard_normal((rows, 3)).astype(np.float32)
            inputs.append(x)
            tasks.append(asyncio.ensure_future(batcher.infer(request(x, priority))))
            await asyncio.sleep(gap)
        results = await asyncio.gather(*tasks)
        for x, out in zip(inputs, results, strict=True):
            np.testing.assert_allclose(out["Y"], model(x), rtol=1e-6)
        await batcher.stop()

    asyncio.run(scenario())
    ran = [len(b) for f in fakes for b in f.batches]
    assert all(size <= max_batch for size in ran)
    assert sum(ran) == sum(rows for rows, _, _ in data) == stats.inference_count
    assert stats.execution_count == len(ran)
    assert stats.success.count == 0 and stats.queue.count == len(data)


async def test_higher_priority_runs_first(core_impl: str) -> None:
    batching = BatchingSpec(preferred_batch_sizes=(2,), priority_levels=2, default_priority_level=2)
    fake = FakeInstance()
    fake.gate = threading.Event()
    batcher = DynamicBatcher(spec(2, batching), [fake], ModelStats("m", 1))
    batcher.start()
    blocker = asyncio.ensure_future(batcher.infer(request(np.full((1, 3), 9, np.float32))))
    await until_running(fake)  # the blocker now occupies the only instance
    low = [
        asyncio.ensure_future(batcher.infer(request(np.full((1, 3), i, np.float32), priority=2)))
        for i in (10, 11)
    ]
    await asyncio.sleep(0.01)
    high = [
        asyncio.ensure_future(batcher.infer(request(np.full((1, 3), i, np.float32), priority=1)))
        for i in (20, 21)
    ]
    await asyncio.sleep(0.01)
    fake.gate.set()
    await asyncio.gather(blocker, *low, *high)
    assert fake.batches == [[9.0], [20.0, 21.0], [10.0, 11.0]]
    await batcher.stop()


async def test_queue_timeout_fires_on_time_while_the_instance_is_busy(core_impl: str) -> None:
    batching = BatchingSpec(
        preferred_batch_sizes=(4,),
        default_queue_policy=QueuePolicy(default_timeout_us=1_000_000, allow_timeout_override=True),
    )
    fake = FakeInstance()
    fake.gate = threading.Event()
    batcher = DynamicBatcher(spec(4, batching), [fake], ModelStats("m", 1))
    batcher.start()
    busy = asyncio.ensure_future(batcher.infer(request(np.ones((4, 3), np.float32))))
    await until_running(fake)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="timeout expired"):
        await batcher.infer(request(np.ones((1, 3), np.float32), timeout_us=50_000))
    waited = time.monotonic() - started
    assert 0.04 <= waited < 1.0, waited  # its own timer: the instance stays blocked meanwhile
    fake.gate.set()
    await busy
    await batcher.stop()


async def test_full_queue_rejects_at_once_and_cancel_leaves_the_queue(core_impl: str) -> None:
    batching = BatchingSpec(
        preferred_batch_sizes=(1,), default_queue_policy=QueuePolicy(max_queue_size=2)
    )
    fake = FakeInstance()
    fake.gate = threading.Event()
    batcher = DynamicBatcher(spec(1, batching), [fake], ModelStats("m", 1))
    batcher.start()
    running = asyncio.ensure_future(batcher.infer(request(np.full((1, 3), 1, np.float32))))
    await until_running(fake)
    queued = [
        asyncio.ensure_future(batcher.infer(request(np.full((1, 3), v, np.float32))))
        for v in (2, 3)
    ]
    await asyncio.sleep(0.01)
    with pytest.raises(Unavailable, match="Exceeds maximum queue size"):
        await batcher.infer(request(np.ones((1, 3), np.float32)))
    queued[0].cancel()
    await asyncio.sleep(0.01)
    fake.gate.set()
    await asyncio.gather(running, queued[1])
    assert fake.batches == [[1.0], [3.0]]  # the cancelled request never ran
    await batcher.stop()


async def test_without_dynamic_batching_requests_run_one_at_a_time(core_impl: str) -> None:
    fake = FakeInstance(delay_s=0.002)
    batcher = DynamicBatcher(spec(8, None), [fake], ModelStats("m", 1))
    batcher.start()
    xs = [np.full((3, 3), i, np.float32) for i in range(6)]
    outs = await asyncio.gather(*(batcher.infer(request(x)) for x in xs))
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out["Y"], model(x))
    assert [len(b) for b in fake.batches] == [3] * 6
    await batcher.stop()


async def test_stop_fails_queued_requests_with_unavailable(core_impl: str) -> None:
    fake = FakeInstance()
    fake.gate = threading.Event()
    batcher = DynamicBatcher(spec(1, None), [fake], ModelStats("m", 1))
    batcher.start()
    running = asyncio.ensure_future(batcher.infer(request(np.ones((1, 3), np.float32))))
    await until_running(fake)
    queued = asyncio.ensure_future(batcher.infer(request(np.ones((1, 3), np.float32))))
    await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(batcher.stop())
    await asyncio.sleep(0.01)
    fake.gate.set()
    await stopping
    assert (await running)["Y"].shape == (1, 3)
    with pytest.raises(Unavailable):
        await queued


class ThreadRecorder(FakeInstance):
    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.threads: list[int] = []

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.get_ident())
        return super().execute(inputs)


@pytest.mark.parametrize(("delay_s", "inline_expected"), [(0.0, True), (0.003, False)])
async def test_fast_models_switch_to_inline_execution(
    core_impl: str, delay_s: float, inline_expected: bool
) -> None:
    fake = ThreadRecorder(delay_s)
    batcher = DynamicBatcher(spec(1, None), [fake], ModelStats("m", 1), inline_threshold_us=1000)
    batcher.start()
    for i in range(12):
        x = np.full((1, 3), i, np.float32)
        np.testing.assert_allclose((await batcher.infer(request(x)))["Y"], model(x))
    loop_thread = threading.get_ident()
    assert all(t != loop_thread for t in fake.threads[:8])  # measured on threads first
    assert all((t == loop_thread) is inline_expected for t in fake.threads[8:])
    await batcher.stop()
