"""The ensemble scheduler: runs an ensemble's steps as their inputs become available.

An ensemble (``platform: "ensemble"``, Triton's composed models) is served by an
``EnsembleScheduler`` instead of a batcher. For each request it starts every step whose input
tensors are available, concurrently (asyncio tasks), and feeds each step's outputs to the steps
that read them, until the ensemble's outputs are produced. Model steps go to the composing
model's own scheduler (``ensemble_steps``), so each composing model batches, counts and traces
its own requests; ``python:<function>`` steps call a function of the ensemble's ``model.py`` on
a worker thread (``ensemble_python``).

A failing step fails the request with its own status and a message naming the step, e.g.
``ensemble 'e' step 2 ('classifier'): ...``. An ensemble is ready only while every composing
model is: composing models are resolved at request time, so an ensemble may load before them.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np

from volley.errors import Internal, Unavailable, VolleyError
from volley.model.ensemble import EnsembleStep
from volley.model.spec import ModelSpec
from volley.scheduler.request import InferRequest, Outputs
from volley.serving.ensemble_python import PythonModule, PythonStep
from volley.serving.ensemble_steps import ModelStep, conform
from volley.serving.registry import ModelVersion, Registry

log = logging.getLogger("volley.serving")

Step = ModelStep | PythonStep


class EnsembleScheduler:
    """Runs the steps of one ensemble version (the ``Scheduler`` protocol)."""

    def __init__(self, spec: ModelSpec, python_file: Path, registry: Registry) -> None:
        """Prepare the steps of ``spec``; imports ``python_file`` when a step calls Python.

        Blocking (the import); raises ``ConfigError`` naming the file when it cannot be used.
        """
        ensemble = spec.ensemble
        if ensemble is None:
            raise ValueError(f"model '{spec.name}' is not an ensemble")
        self._spec = spec
        self._name = spec.name
        self._python = (
            PythonModule(python_file, ensemble.functions, spec.name) if ensemble.functions else None
        )
        self._steps: tuple[Step, ...] = tuple(self._make_step(s, registry) for s in ensemble.steps)
        self._model_steps = [s for s in self._steps if isinstance(s, ModelStep)]
        self._pending = 0
        self._accepting = False
        self._stopped = False
        self._idle: asyncio.Event | None = None

    def _make_step(self, step: EnsembleStep, registry: Registry) -> Step:
        if step.function is None:
            return ModelStep(step, self._spec, registry)
        assert self._python is not None
        return PythonStep(step, self._python.functions[step.function])

    # -- the Scheduler protocol -----------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Always 0: an ensemble's requests wait in its composing models' queues."""
        return 0

    @property
    def pending(self) -> int:
        """Requests accepted and not yet answered."""
        return self._pending

    def start(self) -> None:
        """Start accepting requests (on the event loop)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True

    async def infer(self, request: InferRequest) -> Outputs:
        """Run every step of the ensemble for ``request``; the ensemble's outputs."""
        idle = self._idle
        if not self._accepting or idle is None:
            raise Unavailable(f"ensemble '{self._name}' is not accepting requests (unloading)")
        self._pending += 1
        idle.clear()
        try:
            return await self._run(request)
        finally:
            self._pending -= 1
            if not self._pending:
                idle.set()

    async def drain(self, timeout: float) -> bool:
        """Refuse new requests and wait (``timeout`` s) until the accepted ones are answered."""
        self._accepting = False
        if self._idle is None:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Refuse new requests; requests in flight start no further step (UNAVAILABLE)."""
        self._accepting = False
        self._stopped = True
        if self._python is not None:
            self._python.close()

    # -- readiness ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True while every composing model (nested ensembles' included) can serve."""
        return self.unready_reason() is None

    def unready_reason(self) -> str | None:
        """Why the ensemble cannot serve now (the first step whose model is not ready)."""
        for step in self._model_steps:
            try:
                bound = step.bind()
            except VolleyError as exc:
                return f"{self._where(step)}: {exc.message}"
            nested = bound.scheduler
            if isinstance(nested, EnsembleScheduler):
                reason = nested.unready_reason()
                if reason is not None:
                    return f"{self._where(step)}: {reason}"
        return None

    # -- one request ----------------------------------------------------------------------------
    async def _run(self, request: InferRequest) -> Outputs:
        tensors: dict[str, np.ndarray] = dict(request.inputs)
        waiting = list(self._steps)
        running: dict[asyncio.Future[dict[str, np.ndarray]], Step] = {}
        try:
            while waiting or running:
                ready = [s for s in waiting if s.step.reads <= tensors.keys()]
                if ready and self._stopped:
                    raise Unavailable(f"ensemble '{self._name}' was unloaded")
                for step in ready:
                    waiting.remove(step)
                if len(ready) == 1 and not running:
                    # a chain: the step runs in this task, no task to create
                    tensors.update(await self._call(ready[0], tensors, request))
                    continue
                for step in ready:
                    task = asyncio.ensure_future(self._call(step, tensors, request))
                    task.add_done_callback(_retrieve)
                    running[task] = step
                if not running:
                    names = ", ".join(s.step.label for s in waiting)
                    raise Internal(f"ensemble '{self._name}': {names} can never run")
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    del running[finished]
                    tensors.update(finished.result())
        finally:
            for unfinished in running:
                unfinished.cancel()
        return self._outputs(tensors)

    async def _call(
        self, step: Step, tensors: dict[str, np.ndarray], request: InferRequest
    ) -> dict[str, np.ndarray]:
        """Run one step; a failure keeps its status and names the step."""
        inputs = {name: tensors[tensor] for name, tensor in step.step.input_map}
        try:
            return await step.run(inputs, request)
        except VolleyError as exc:
            raise _renamed(exc, f"{self._where(step)}: {exc.message}") from exc
        except Exception as exc:
            log.error("%s failed", self._where(step), exc_info=exc)
            raise Internal(f"{self._where(step)} failed ({type(exc).__name__})") from exc

    def _outputs(self, tensors: dict[str, np.ndarray]) -> Outputs:
        spec = self._spec
        outputs: Outputs = {}
        for ts in spec.outputs:
            target = f"output '{ts.name}' of ensemble '{self._name}'"
            what = f"tensor '{ts.name}'"
            try:
                outputs[ts.name] = conform(tensors[ts.name], ts, spec.max_batch_size, what, target)
            except VolleyError as exc:
                raise Internal(exc.message) from exc
        return outputs

    def _where(self, step: Step) -> str:
        return f"ensemble '{self._name}' {step.step.label}"


def _renamed(exc: VolleyError, message: str) -> VolleyError:
    """A copy of ``exc`` (same class, same status and fields) with another message."""
    copy = type(exc).__new__(type(exc))
    copy.__dict__.update(exc.__dict__)
    copy.args = (message,)
    copy.message = message
    return copy


def _retrieve(task: asyncio.Future[dict[str, np.ndarray]]) -> None:
    """Mark a step's failure as seen (a step cancelled after another failed is not awaited)."""
    if not task.cancelled():
        task.exception()


def composed_ready(mv: ModelVersion) -> bool:
    """False when ``mv`` is an ensemble some composing model of which cannot serve now."""
    scheduler = mv.scheduler
    return not isinstance(scheduler, EnsembleScheduler) or scheduler.ready
