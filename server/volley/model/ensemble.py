"""The plain-Python view of an ensemble's ``ensemble_scheduling``: its steps and their maps.

An ensemble (``platform: "ensemble"``) is a graph of steps over named *ensemble tensors*:
its own inputs, and whatever its steps produce. A step runs a composing model of the
repository, or (beyond Triton) a Python function of the ensemble's ``model.py`` when its
``model_name`` is ``python:<function>``. The graph's rules are checked by
``volley.repository.ensemble``; this module only carries the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from volley._proto.inference import model_config_pb2 as mc

#: The platform of an ensemble model.
ENSEMBLE_PLATFORM: Final = "ensemble"
#: ``model_name`` prefix of a step that runs a function of the ensemble's ``model.py``.
PYTHON_PREFIX: Final = "python:"
#: File in each version folder of an ensemble that holds its Python steps.
PYTHON_FILE: Final = "model.py"


@dataclass(frozen=True, slots=True)
class EnsembleStep:
    """One step: which model (or function) runs, and how its tensors map to the ensemble's."""

    #: Position in the configuration, from 1 (as messages name it).
    number: int
    #: A composing model's name, or ``python:<function>``.
    model_name: str
    #: A specific version of the composing model, or -1 for its default (highest READY).
    model_version: int
    #: (input name of the step's model, ensemble tensor it reads), sorted by input name.
    input_map: tuple[tuple[str, str], ...]
    #: (output name of the step's model, ensemble tensor it produces), sorted by output name.
    output_map: tuple[tuple[str, str], ...]

    @property
    def function(self) -> str | None:
        """The Python function a ``python:`` step calls, else None."""
        if self.model_name.startswith(PYTHON_PREFIX):
            return self.model_name[len(PYTHON_PREFIX) :]
        return None

    @property
    def version_str(self) -> str:
        """The version as a request names it ("" for the default version)."""
        return str(self.model_version) if self.model_version > 0 else ""

    @property
    def label(self) -> str:
        """How messages name the step, e.g. ``step 2 ('classifier')``."""
        return f"step {self.number} ('{self.model_name}')"

    @property
    def reads(self) -> frozenset[str]:
        """Ensemble tensors the step needs before it can run."""
        return frozenset(tensor for _, tensor in self.input_map)

    @property
    def writes(self) -> tuple[str, ...]:
        """Ensemble tensors the step produces."""
        return tuple(tensor for _, tensor in self.output_map)

    @classmethod
    def from_proto(cls, number: int, step: mc.ModelEnsembling.Step) -> EnsembleStep:
        """The step at position ``number`` (from 1) of a configuration."""
        return cls(
            number=number,
            model_name=step.model_name,
            model_version=-1 if step.model_version <= 0 else int(step.model_version),
            input_map=tuple(sorted(step.input_map.items())),
            output_map=tuple(sorted(step.output_map.items())),
        )


@dataclass(frozen=True, slots=True)
class EnsembleSpec:
    """The steps of an ensemble, in configuration order."""

    steps: tuple[EnsembleStep, ...]

    @property
    def functions(self) -> tuple[str, ...]:
        """Names of the Python functions its ``python:`` steps call, without repeats."""
        names = (s.function for s in self.steps if s.function is not None)
        return tuple(dict.fromkeys(names))

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> EnsembleSpec | None:
        """The ensemble of ``config``, or None when it is not an ensemble."""
        if config.platform != ENSEMBLE_PLATFORM:
            return None
        steps = config.ensemble_scheduling.step
        return cls(steps=tuple(EnsembleStep.from_proto(i, s) for i, s in enumerate(steps, 1)))
