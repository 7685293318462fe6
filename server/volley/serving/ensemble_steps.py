"""Model steps of an ensemble: bind a step to its composing model, check and submit tensors.

A step is bound at request time to the version the registry serves (composing models may load
after the ensemble, and be reloaded or unloaded while it serves). A binding is checked once per
loaded version: the step's ``input_map``/``output_map`` names against the model's inputs and
outputs (every required input mapped) and Triton's batching rule (an ensemble that batches
needs composing models whose ``max_batch_size`` is at least its own). A step that cannot be
bound fails with UNAVAILABLE naming the model, which also makes the ensemble not ready.

Each request's tensors are checked against the composing model's spec (datatype, shape, batch
size) as the codec checks a client's, then submitted to that version's own scheduler as an
``InferRequest``: no serialization, and concurrent ensemble requests batch there.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from volley.backends import get_backend
from volley.backends.base import Backend
from volley.errors import (
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
    VolleyError,
)
from volley.model import dtypes
from volley.model.ensemble import EnsembleStep
from volley.model.spec import ModelSpec, TensorSpec
from volley.scheduler.base import Scheduler
from volley.scheduler.request import InferRequest
from volley.serving.registry import ModelVersion, Registry
from volley.telemetry.stats import failure_reason

_now = time.monotonic_ns


@dataclass(frozen=True, slots=True)
class Binding:
    """A step bound to one loaded version of its composing model."""

    mv: ModelVersion
    scheduler: Scheduler
    #: (input spec, ensemble tensor), in the model's input order.
    inputs: tuple[tuple[TensorSpec, str], ...]
    #: The backend's per-request check of BYTES inputs, if any input is BYTES.
    backend: Backend | None


class ModelStep:
    """A step that runs a composing model of the repository."""

    def __init__(self, step: EnsembleStep, ensemble: ModelSpec, registry: Registry) -> None:
        self.step = step
        self._ensemble = ensemble
        self._registry = registry
        self._bound: Binding | None = None

    def bind(self) -> Binding:
        """The step bound to the version the registry serves now; UNAVAILABLE if it cannot be."""
        step = self.step
        try:
            mv = self._registry.resolve(step.model_name, step.version_str)
        except (NotFound, Unavailable) as exc:
            raise Unavailable(f"model '{step.model_name}' is not ready: {exc.message}") from exc
        bound = self._bound
        if bound is not None and bound.mv is mv and bound.scheduler is mv.scheduler:
            return bound
        if mv.scheduler is None:
            raise Unavailable(f"model '{mv.name}' version {mv.version} is not at ready state")
        bound = self._bound = _bind(step, self._ensemble, mv, mv.scheduler, self._registry)
        return bound

    async def run(
        self, inputs: dict[str, np.ndarray], parent: InferRequest
    ) -> dict[str, np.ndarray]:
        """Run the step's model on ``inputs`` (by its input names); the outputs by ensemble
        tensor name."""
        bound = self.bind()
        try:
            return await self._submit(bound, inputs, parent)
        except Unavailable:
            # the version was swapped out under the request: the one serving now, once
            if self.step.model_version > 0:
                raise
            fresh = self.bind()
            if fresh.mv is bound.mv:
                raise
            return await self._submit(fresh, inputs, parent)

    async def _submit(
        self, bound: Binding, inputs: dict[str, np.ndarray], parent: InferRequest
    ) -> dict[str, np.ndarray]:
        mv = bound.mv
        started = _now()
        try:
            request = _request(bound, inputs, parent, started)
            if mv.monitor is not None:
                mv.monitor.observe(request.inputs)
            outputs = await bound.scheduler.infer(request)
        except BaseException as exc:
            mv.stats.record_failure(_now() - started, failure_reason(exc))
            raise
        mv.stats.record_success(_now() - started)
        try:
            return {tensor: outputs[name] for name, tensor in self.step.output_map}
        except KeyError as exc:
            raise Internal(f"model '{mv.name}' returned no output {exc}") from exc


def _bind(
    step: EnsembleStep, ensemble: ModelSpec, mv: ModelVersion, scheduler: Scheduler, reg: Registry
) -> Binding:
    spec = mv.spec
    if spec.ensemble is not None and _reaches(reg, spec, ensemble.name, {spec.name}):
        raise Unavailable(f"ensembles '{ensemble.name}' and '{spec.name}' contain each other")
    model = f"model '{mv.name}' version {mv.version}"
    mapped = dict(step.input_map)
    for name in mapped:
        if name not in spec.input_by_name:
            raise Unavailable(
                f"{model} has no input '{name}' (its inputs: {[t.name for t in spec.inputs]})"
            )
    for name, _ in step.output_map:
        if name not in spec.output_by_name:
            raise Unavailable(
                f"{model} has no output '{name}' (its outputs: {list(spec.output_names)})"
            )
    unmapped = [t.name for t in spec.inputs if not t.optional and t.name not in mapped]
    if unmapped:
        raise Unavailable(f"{model} needs input(s) {unmapped}, which the step does not map")
    if ensemble.max_batch_size > spec.max_batch_size and ensemble.max_batch_size > 0:
        raise Unavailable(
            f"the ensemble's max_batch_size {ensemble.max_batch_size} is larger than "
            f"{model}'s ({spec.max_batch_size})"
        )
    inputs = tuple((t, mapped[t.name]) for t in spec.inputs if t.name in mapped)
    has_bytes = any(t.datatype == "BYTES" for t, _ in inputs)
    backend = get_backend(spec.backend) if has_bytes and spec.backend else None
    return Binding(mv, scheduler, inputs, backend)


def _reaches(registry: Registry, spec: ModelSpec, target: str, seen: set[str]) -> bool:
    """True when ensemble ``spec`` runs ``target``, directly or through nested ensembles."""
    assert spec.ensemble is not None
    for step in spec.ensemble.steps:
        name = step.model_name
        if step.function is not None or name in seen:
            continue
        if name == target:
            return True
        seen.add(name)
        try:
            nested = registry.resolve(name, step.version_str).spec
        except VolleyError:
            continue
        if nested.ensemble is not None and _reaches(registry, nested, target, seen):
            return True
    return False


def _request(
    bound: Binding, inputs: dict[str, np.ndarray], parent: InferRequest, now: int
) -> InferRequest:
    """The composing model's request from the step's ``inputs`` (by the model's input names),
    each checked as the codec checks a client's."""
    spec = bound.mv.spec
    batching = spec.max_batch_size > 0
    arrays: dict[str, np.ndarray] = {}
    key: list[Hashable] = []
    rows = -1
    for ts, tensor in bound.inputs:
        target = f"input '{ts.name}' of model '{spec.name}'"
        array = conform(inputs[ts.name], ts, spec.max_batch_size, f"tensor '{tensor}'", target)
        if batching:
            if rows == -1:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                raise InvalidArgument(
                    f"tensor '{tensor}' has batch size {array.shape[0]} but the other inputs of "
                    f"model '{spec.name}' have {rows}"
                )
        if bound.backend is not None and ts.datatype == "BYTES":
            bound.backend.check_input(ts.name, ts.datatype, array)
        arrays[ts.name] = array
        key.append(ts.name)
        key.extend(array.shape[1:] if batching else array.shape)
    return InferRequest(
        inputs=arrays,
        rows=rows if batching else 1,
        shape_key=tuple(key),
        priority=parent.priority,
        timeout_us=parent.timeout_us,
        arrival_ns=now,
        trace=parent.trace,
    )


def conform(value: object, ts: TensorSpec, max_batch: int, what: str, target: str) -> np.ndarray:
    """``value`` (``what``) as an array of ``ts``'s datatype and shape, else ``InvalidArgument``
    saying why it does not fit ``target`` (e.g. "input 'x' of model 'm'").

    Nothing is cast: only text arrays become BYTES object arrays (of UTF-8 ``bytes``).
    """
    array = np.asarray(value)
    if ts.datatype == "BYTES":
        if array.dtype.kind == "U":
            flat = [s.encode("utf-8") for s in array.reshape(-1).tolist()]
            array = np.array(flat, dtype=object).reshape(array.shape)
        elif array.dtype.kind == "S":
            array = array.astype(object)
    if array.dtype != dtypes.NUMPY[ts.datatype]:
        raise InvalidArgument(f"{what} is {array.dtype} but {target} is {ts.datatype}")
    shape = array.shape
    offset = 1 if max_batch > 0 else 0
    dims_ok = len(shape) == len(ts.dims) + offset and all(
        want in (-1, got) for want, got in zip(ts.dims, shape[offset:], strict=True)
    )
    if not dims_ok:
        raise InvalidArgument(
            f"{what} has shape {list(shape)} but {target} has shape {ts.full_shape(max_batch)}"
        )
    if offset and not 1 <= shape[0] <= max_batch:
        raise InvalidArgument(
            f"{what} has batch size {shape[0]} but {target} takes 1 to {max_batch} rows"
        )
    return array
