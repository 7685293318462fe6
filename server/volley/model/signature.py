"""The input/output signature a backend reads from a model file (for auto-complete)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One graph input or output as the model file declares it."""

    name: str
    #: v2 datatype string; None for element types the protocol cannot carry.
    datatype: str | None
    #: Full shape with ``-1`` for symbolic/unknown dims; None when the rank is unknown.
    shape: tuple[int, ...] | None
    #: The framework's name of the element type, for messages.
    native_type: str = ""


@dataclass(frozen=True, slots=True)
class ModelIO:
    """The signature of a model file."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    #: Graph inputs that have an initializer (the request may override them; optional).
    overridable: tuple[TensorInfo, ...] = ()
    #: The largest batch the file accepts, when it declares one (a TensorRT engine's
    #: optimisation profiles); None when any batch size is accepted.
    max_batch_size: int | None = None

    def can_batch(self) -> bool:
        """True when every input and output has a dynamic first dimension."""
        return all(
            t.shape is not None and len(t.shape) > 0 and t.shape[0] == -1
            for t in (*self.inputs, *self.outputs)
        )
