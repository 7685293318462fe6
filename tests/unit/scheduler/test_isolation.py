"""A batch that fails at run time is rerun request by request: only the culprit fails."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from volley.backends.base import ModelInstance
from volley.errors import Internal, InvalidArgument
from volley.model.spec import BatchingSpec, ModelSpec, TensorSpec
from volley.scheduler.batcher import DynamicBatcher
from volley.scheduler.request import InferRequest
from volley.telemetry.stats import ModelStats

SPEC = ModelSpec(
    name="m",
    platform="onnxruntime_onnx",
    backend="onnxruntime",
    max_batch_size=8,
    inputs=(TensorSpec("X", "FP32", (2,)),),
    outputs=(TensorSpec("Y", "FP32", (2,)),),
    batching=BatchingSpec(preferred_batch_sizes=(8,), max_queue_delay_us=200_000),
)


class Poisoned(ModelInstance):
    """Fails any execution that contains a negative value; doubles otherwise."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["X"]
        self.calls.append(len(x))
        if (x < 0).any():
            raise InvalidArgument("negative values are poison")
        if (x > 1000).any():
            raise RuntimeError("backend blew up")
        return {"Y": x * 2}


def request(value: float) -> InferRequest:
    return InferRequest(inputs={"X": np.full((1, 2), value, np.float32)}, rows=1, shape_key=(2,))


@pytest.mark.parametrize("poison", [-1.0, 5000.0])
async def test_only_the_culprit_fails(poison: float) -> None:
    instance = Poisoned()
    stats = ModelStats("m", 1)
    batcher = DynamicBatcher(SPEC, [instance], stats)
    batcher.start()
    try:
        values = [1.0, 2.0, poison, 3.0]
        results = await asyncio.gather(
            *(batcher.infer(request(v)) for v in values), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert instance.calls[0] == 4  # one batch of four, then one by one
    assert instance.calls[1:] == [1, 1, 1, 1]
    for value, result in zip(values, results, strict=True):
        if value == poison:
            expected = InvalidArgument if poison < 0 else Internal
            assert isinstance(result, expected), result
            assert "element" not in str(result)
        else:
            assert isinstance(result, dict)
            np.testing.assert_array_equal(result["Y"], [[value * 2, value * 2]])
    assert stats.inference_count == 3


class Hung(ModelInstance):
    def __init__(self) -> None:
        import threading

        self.release = threading.Event()

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.release.wait(30)
        return {"Y": inputs["X"]}


async def test_a_hung_backend_does_not_hang_stop() -> None:
    import time

    from volley.errors import Unavailable

    instance = Hung()
    batcher = DynamicBatcher(SPEC, [instance], ModelStats("m", 1), stop_timeout_s=0.3)
    batcher.start()
    call = asyncio.ensure_future(batcher.infer(request(1.0)))
    await asyncio.sleep(0.4)  # the batch is executing (its delay has passed)
    started = time.monotonic()
    await batcher.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(Unavailable, match="unloaded"):
        await call
    instance.release.set()
