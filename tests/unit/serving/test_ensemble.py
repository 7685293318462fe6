"""``EnsembleScheduler`` over fake composing models: concurrency, traces, errors, lifecycle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from volley.errors import DeadlineExceeded, Internal, InvalidArgument, Unavailable
from volley.model.spec import ModelSpec
from volley.repository import config_io
from volley.scheduler.request import InferRequest, Outputs
from volley.serving.ensemble import EnsembleScheduler, composed_ready
from volley.serving.registry import ModelEntry, ModelState, ModelVersion, Registry
from volley.telemetry.tracing import RequestTrace

COMPOSING = """backend: "onnxruntime" platform: "onnxruntime_onnx" max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""

#: ``IN`` feeds ``left`` and ``right`` (independent), ``join`` adds their outputs.
DIAMOND = """platform: "ensemble" max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
ensemble_scheduling { step [
  { model_name: "left" input_map { key: "x" value: "IN" } output_map { key: "y" value: "l" } },
  { model_name: "right" input_map { key: "x" value: "IN" } output_map { key: "y" value: "r" } },
  { model_name: "python:join" input_map [ { key: "a" value: "l" }, { key: "b" value: "r" } ]
    output_map { key: "sum" value: "OUT" } }
] }
"""


class FakeModel:
    """A composing model's scheduler: ``y = x + offset`` once ``gate`` opens."""

    def __init__(self, offset: float, gate: asyncio.Event | None = None) -> None:
        self.offset = offset
        self.gate = gate
        self.requests: list[InferRequest] = []
        self.running = 0
        self.most_running = 0
        self.error: Exception | None = None
        self.cancelled = 0

    async def infer(self, request: InferRequest) -> Outputs:
        self.requests.append(request)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.error is not None:
                raise self.error
            return {"y": request.inputs["x"] + np.float32(self.offset)}
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    queued = 0
    pending = 0

    def start(self) -> None: ...

    async def drain(self, timeout: float) -> bool:
        return True

    async def stop(self) -> None: ...


def _spec(text: str, name: str) -> ModelSpec:
    config = config_io.parse_pbtxt(text)
    config.name = name
    return ModelSpec.from_config(config)


def publish(registry: Registry, name: str, scheduler: Any, text: str = COMPOSING) -> ModelVersion:
    mv = ModelVersion(name, 1, _spec(text, name))
    mv.scheduler, mv.state = scheduler, ModelState.READY
    registry.publish(ModelEntry.of(name, {1: mv}))
    return mv


def diamond(tmp_path: Path, registry: Registry, join: str = "a + b") -> EnsembleScheduler:
    (tmp_path / "model.py").write_text(
        f"def join(inputs):\n    a, b = inputs['a'], inputs['b']\n    return {{'sum': {join}}}\n"
    )
    scheduler = EnsembleScheduler(_spec(DIAMOND, "diamond"), tmp_path / "model.py", registry)
    scheduler.start()
    return scheduler


def request(trace: object = None) -> InferRequest:
    x = np.array([[1, 2]], np.float32)
    return InferRequest({"IN": x}, 1, ("IN", 2), trace=cast(RequestTrace, trace))


async def test_independent_steps_run_concurrently_and_get_the_trace(tmp_path: Path) -> None:
    registry, gate = Registry(), asyncio.Event()
    left, right = FakeModel(10, gate), FakeModel(100, gate)
    publish(registry, "left", left)
    publish(registry, "right", right)
    scheduler = diamond(tmp_path, registry)
    trace = object()
    task = asyncio.ensure_future(scheduler.infer(request(trace)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert (left.running, right.running) == (1, 1)  # both wait at once
    assert scheduler.pending == 1 and scheduler.queued == 0
    gate.set()
    out = await task
    np.testing.assert_array_equal(out["OUT"], [[112, 114]])
    assert left.requests[0].trace is trace and right.requests[0].trace is trace
    step = left.requests[0]
    assert (step.rows, step.shape_key) == (1, ("x", 2))
    assert scheduler.pending == 0


async def test_a_step_error_keeps_its_class_and_names_the_step(tmp_path: Path) -> None:
    registry = Registry()
    right = FakeModel(0)
    right.error = DeadlineExceeded("Request timeout expired")
    publish(registry, "left", FakeModel(0))
    publish(registry, "right", right)
    scheduler = diamond(tmp_path, registry)
    with pytest.raises(DeadlineExceeded) as info:
        await scheduler.infer(request())
    assert info.value.message == ("ensemble 'diamond' step 2 ('right'): Request timeout expired")


async def test_a_failure_cancels_the_steps_still_running(tmp_path: Path) -> None:
    registry = Registry()
    left, right = FakeModel(0, asyncio.Event()), FakeModel(0)
    right.error = InvalidArgument("bad")
    publish(registry, "left", left)
    publish(registry, "right", right)
    scheduler = diamond(tmp_path, registry)
    with pytest.raises(InvalidArgument):
        await scheduler.infer(request())
    await asyncio.sleep(0)
    assert left.cancelled == 1


async def test_outputs_must_match_the_ensemble_config(tmp_path: Path) -> None:
    registry = Registry()
    publish(registry, "left", FakeModel(0))
    publish(registry, "right", FakeModel(0))
    scheduler = diamond(tmp_path, registry, join="(a + b).astype('float64')")
    with pytest.raises(Internal, match="tensor 'OUT' is float64 but output 'OUT' of ensemble"):
        await scheduler.infer(request())


async def test_python_steps_see_read_only_inputs(tmp_path: Path) -> None:
    registry = Registry()
    publish(registry, "left", FakeModel(0))
    publish(registry, "right", FakeModel(0))
    scheduler = diamond(tmp_path, registry, join="a.__iadd__(b)")
    with pytest.raises(Internal, match=r"step 3 \('python:join'\): join raised ValueError: "):
        await scheduler.infer(request())


async def test_step_inputs_are_checked_against_the_composing_model(tmp_path: Path) -> None:
    registry = Registry()
    publish(registry, "left", FakeModel(0))
    publish(registry, "right", FakeModel(0))
    scheduler = diamond(tmp_path, registry)
    wrong = InferRequest({"IN": np.ones((1, 2), np.float64)}, 1, ())
    with pytest.raises(InvalidArgument, match="tensor 'IN' is float64 but input 'x' of model"):
        await scheduler.infer(wrong)


async def test_readiness_and_binding_rules(tmp_path: Path) -> None:
    registry = Registry()
    scheduler = diamond(tmp_path, registry)
    ensemble = publish(registry, "diamond", scheduler, DIAMOND)
    assert not composed_ready(ensemble)
    assert scheduler.unready_reason() == (
        "ensemble 'diamond' step 1 ('left'): model 'left' is not ready: Request for unknown "
        "model: 'left' is not found"
    )
    publish(registry, "left", FakeModel(0))
    publish(
        registry, "right", FakeModel(0), COMPOSING.replace("max_batch_size: 8", "max_batch_size: 4")
    )
    assert "the ensemble's max_batch_size 8 is larger than model 'right' version 1's (4)" in str(
        scheduler.unready_reason()
    )
    publish(registry, "right", FakeModel(0), COMPOSING.replace('name: "x"', 'name: "z"'))
    assert "model 'right' version 1 has no input 'x'" in str(scheduler.unready_reason())
    with pytest.raises(Unavailable, match=r"step 2 \('right'\).*no input 'x'"):
        await scheduler.infer(request())
    publish(registry, "right", FakeModel(0))
    assert scheduler.ready and composed_ready(ensemble)


async def test_nested_ensembles_that_contain_each_other_are_not_ready(tmp_path: Path) -> None:
    registry = Registry()
    left = 'model_name: "left" input_map { key: "x" value: "IN" } output_map { key: "y"'
    nested = 'model_name: "{}" input_map {{ key: "IN" value: "IN" }} output_map {{ key: "OUT"'
    outer_text = DIAMOND.replace(left, nested.format("inner"))
    inner_text = DIAMOND.replace(left, nested.format("outer"))
    assert outer_text != DIAMOND and inner_text != DIAMOND
    (tmp_path / "model.py").write_text("def join(inputs):\n    return {'sum': inputs['a']}\n")
    outer = EnsembleScheduler(_spec(outer_text, "outer"), tmp_path / "model.py", registry)
    inner = EnsembleScheduler(_spec(inner_text, "inner"), tmp_path / "model.py", registry)
    publish(registry, "outer", outer, outer_text)
    publish(registry, "inner", inner, inner_text)
    publish(registry, "right", FakeModel(0))
    assert "ensembles 'outer' and 'inner' contain each other" in str(outer.unready_reason())
    outer.start()
    with pytest.raises(Unavailable, match="contain each other"):
        await outer.infer(request())


async def test_a_nested_ensemble_runs_and_passes_on_its_readiness(tmp_path: Path) -> None:
    registry = Registry()
    left = FakeModel(10)
    publish(registry, "left", left)
    publish(registry, "right", FakeModel(100))
    inner = publish(registry, "inner", diamond(tmp_path, registry), DIAMOND)
    nested = 'model_name: "inner" input_map { key: "IN" value: "IN" } output_map { key: "OUT"'
    outer_text = DIAMOND.replace(
        'model_name: "left" input_map { key: "x" value: "IN" } output_map { key: "y"', nested
    )
    outer = EnsembleScheduler(_spec(outer_text, "outer"), tmp_path / "model.py", registry)
    outer.start()
    out = await outer.infer(request())
    np.testing.assert_array_equal(out["OUT"], [[112 + 101, 114 + 102]])
    assert outer.ready
    registry.publish(ModelEntry.of("left", {}))
    assert not outer.ready and inner.scheduler is not None
    assert str(outer.unready_reason()).startswith(
        "ensemble 'outer' step 1 ('inner'): ensemble 'diamond' step 1 ('left'): model 'left'"
    )


async def test_drain_waits_and_stop_refuses(tmp_path: Path) -> None:
    registry, gate = Registry(), asyncio.Event()
    publish(registry, "left", FakeModel(0, gate))
    publish(registry, "right", FakeModel(0, gate))
    scheduler = diamond(tmp_path, registry)
    task = asyncio.ensure_future(scheduler.infer(request()))
    await asyncio.sleep(0)
    assert not await scheduler.drain(0.01)  # still answering the accepted request
    with pytest.raises(Unavailable, match="not accepting requests"):
        await scheduler.infer(request())
    gate.set()
    assert await scheduler.drain(1.0)
    assert "OUT" in await task
    await scheduler.stop()
    with pytest.raises(Unavailable):
        await scheduler.infer(request())
