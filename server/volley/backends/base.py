"""What a backend provides: load a model version into instances that execute batches."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volley.model.signature import ModelIO
from volley.model.spec import ModelSpec


class ModelInstance(abc.ABC):
    """One executor of a model (its own session/context); used by one thread at a time."""

    @abc.abstractmethod
    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Blocking; expected to release the GIL while computing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the instance's resources."""


@dataclass
class LoadedModel:
    """The instances of one loaded model version and what they occupy."""

    instances: list[ModelInstance]
    #: Bytes measured at load time, by (memory type, device id): ("CPU", 0), ("GPU", 1), ...
    memory_bytes: dict[tuple[str, int], int] = field(default_factory=dict)
    #: False when the model may answer the same inputs differently (random operators).
    deterministic: bool = True

    def close(self) -> None:
        """Release every instance."""
        for inst in self.instances:
            inst.close()
        self.instances.clear()


class Backend(abc.ABC):
    """Loads model files for one framework."""

    name: str = ""

    @abc.abstractmethod
    def load(self, spec: ModelSpec, model_path: Path) -> LoadedModel:
        """Load ``model_path`` as ``spec.instance_count`` instances. Blocking."""

    def check_input(self, name: str, datatype: str, array: np.ndarray) -> None:  # noqa: B027
        """Raise InvalidArgument when one request's input cannot run on this backend.

        Called for each request before it is queued, so a bad input fails its own request and
        never the batch it would have joined.
        """

    def read_signature(self, model_path: Path) -> ModelIO | None:
        """The file's input/output signature for auto-complete; None if it cannot be read."""
        return None

    def verify(self, model_path: Path) -> None:  # noqa: B027 - optional hook
        """Raise ``ConfigError`` when ``model_path`` cannot be opened (``volley repo check``)."""
