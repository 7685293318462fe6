"""Python steps of an ensemble: functions of ``<ensemble>/<version>/model.py``.

A step whose ``model_name`` is ``python:<function>`` calls ``<function>`` of the ``model.py``
in the ensemble's version folder::

    def preprocess(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

``inputs`` holds the step's ``input_map`` keys (read-only arrays, batch dimension included
when the ensemble batches); the result must hold every ``output_map`` key (anything
``numpy.asarray`` accepts). The file is imported once, when the ensemble version loads (a
failure is a ``ConfigError`` naming it), as a module of its own: it may import installed
packages, not its neighbours. Calls run on worker threads, several at once, so a function
must be thread-safe. Raising a ``volley.errors.VolleyError`` (e.g. ``InvalidArgument``) fails
the request with that status; any other exception fails it as INTERNAL, with the exception's
type and message.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from volley.errors import ConfigError, Internal, VolleyError
from volley.model.ensemble import EnsembleStep
from volley.scheduler.request import InferRequest

log = logging.getLogger("volley.serving")

#: A Python step's function.
StepFunction = Callable[[dict[str, np.ndarray]], Mapping[str, Any]]

#: Numbers the imported modules apart (each load imports the file again).
_module_ids = itertools.count(1)


class PythonModule:
    """The functions of one ensemble version's ``model.py``, imported once."""

    def __init__(self, path: Path, functions: tuple[str, ...], ensemble: str) -> None:
        """Import ``path`` and look up ``functions``; raises ``ConfigError`` naming the file."""
        self.path = path
        self._name = f"volley_ensemble_{ensemble}_{next(_module_ids)}"
        module = self._import(path)
        self.functions: dict[str, StepFunction] = {}
        for name in functions:
            fn = getattr(module, name, None)
            if not callable(fn):
                sys.modules.pop(self._name, None)
                raise ConfigError(
                    f"{path.name} of ensemble '{ensemble}' has no function '{name}'",
                    path=str(path),
                    hint=f"define def {name}(inputs: dict[str, np.ndarray]) -> "
                    "dict[str, np.ndarray] in it",
                )
            self.functions[name] = fn

    def _import(self, path: Path) -> ModuleType:
        spec = importlib.util.spec_from_file_location(self._name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {path.name}", path=str(path))
        module = importlib.util.module_from_spec(spec)
        # registered while it runs, as an import would (dataclasses and pickling look it up)
        sys.modules[self._name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(self._name, None)
            log.error("importing %s failed", path, exc_info=exc)
            raise ConfigError(
                f"importing {path.name} failed: {type(exc).__name__}: {exc}",
                path=str(path),
                hint="run `python <that file>` to see the error",
            ) from exc
        return module

    def close(self) -> None:
        """Forget the module (functions still running keep what they use)."""
        sys.modules.pop(self._name, None)


class PythonStep:
    """A ``python:<function>`` step: calls the function on a worker thread."""

    def __init__(self, step: EnsembleStep, fn: StepFunction) -> None:
        self.step = step
        self._fn = fn

    async def run(
        self, inputs: dict[str, np.ndarray], parent: InferRequest
    ) -> dict[str, np.ndarray]:
        """Call the function with the step's inputs; its outputs by ensemble tensor name.

        ``parent`` (the ensemble's request) is unused: a function sees only its tensors.
        """
        try:
            result = await asyncio.to_thread(
                self._fn, {k: _read_only(v) for k, v in inputs.items()}
            )
        except VolleyError:
            raise
        except Exception as exc:
            log.warning("%s raised", self.step.model_name, exc_info=exc)
            raise Internal(f"{self.step.function} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, Mapping):
            raise Internal(
                f"{self.step.function} returned {type(result).__name__}, not a dict of arrays"
            )
        missing = [name for name, _ in self.step.output_map if name not in result]
        if missing:
            raise Internal(
                f"{self.step.function} returned no {', '.join(repr(m) for m in missing)} "
                f"(it returned {sorted(map(str, result))})"
            )
        return {tensor: np.asarray(result[name]) for name, tensor in self.step.output_map}


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: other steps may read the same tensor at the same time."""
    view = array.view()
    view.flags.writeable = False
    return view
