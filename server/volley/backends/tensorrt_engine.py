"""What a TensorRT engine (``model.plan``) declares, and how it meets the model's config.

Deserialisation (with TensorRT's log in Volley's), I/O discovery through the TensorRT 10 Python
API (``num_io_tensors``, ``get_tensor_*``, ``get_tensor_profile_shape``), the largest batch,
profile selection, and the check of a configuration against its engine. The ``tensorrt``
module is passed in by the backend, so this module never imports it.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from volley.errors import ConfigError, InvalidArgument
from volley.model import dtypes
from volley.model.signature import ModelIO, TensorInfo
from volley.model.spec import ModelSpec

log = logging.getLogger("volley.backends.tensorrt")

#: TensorRT ``DataType`` member name -> v2 datatype. Types missing here (FP8, INT4, FP4, ...)
#: cannot cross the protocol and are refused with a clear error.
TRT_DATATYPES: Final[dict[str, str]] = {
    "FLOAT": "FP32",
    "HALF": "FP16",
    "BF16": "BF16",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "UINT8": "UINT8",
}

Shape = tuple[int, ...]

#: TensorRT engine creation is not thread-safe; loads run on several threads.
_DESERIALIZE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class EngineTensor:
    """One I/O tensor of an engine."""

    name: str
    is_input: bool
    #: v2 datatype string.
    datatype: str
    #: The engine's shape, ``-1`` for a dimension chosen at run time.
    shape: Shape
    #: Inputs only: the ``(min, max)`` shape of each optimisation profile, by profile index.
    ranges: tuple[tuple[Shape, Shape], ...] = ()

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the tensor's elements (BF16 as raw ``uint16``)."""
        return dtypes.NUMPY[self.datatype]

    def info(self) -> TensorInfo:
        """The tensor as auto-complete sees it."""
        return TensorInfo(self.name, self.datatype, self.shape, self.datatype)


@dataclass(frozen=True, slots=True)
class EngineIO:
    """The inputs, outputs and optimisation profiles of an engine."""

    inputs: tuple[EngineTensor, ...]
    outputs: tuple[EngineTensor, ...]
    num_profiles: int

    @property
    def dynamic(self) -> bool:
        """True when any tensor has a dimension chosen at run time."""
        return any(-1 in t.shape for t in (*self.inputs, *self.outputs))

    def can_batch(self) -> bool:
        """True when every input and output has a dynamic first dimension."""
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))

    def max_batch_size(self, profiles: tuple[int, ...] | None = None) -> int:
        """Triton's rule: for each profile, the smallest maximum first dimension over the
        inputs; the largest of those over ``profiles`` (default: all). 0 if it cannot batch."""
        if not self.can_batch() or not self.inputs:
            return 0
        chosen = profiles if profiles is not None else tuple(range(self.num_profiles))
        return max((min(t.ranges[p][1][0] for t in self.inputs) for p in chosen), default=0)

    def signature(self) -> ModelIO:
        """The engine's signature for auto-complete, with its largest batch size."""
        return ModelIO(
            inputs=tuple(t.info() for t in self.inputs),
            outputs=tuple(t.info() for t in self.outputs),
            max_batch_size=self.max_batch_size() if self.can_batch() else None,
        )

    def select_profile(self, shapes: dict[str, Shape], profiles: tuple[int, ...]) -> int:
        """The first of ``profiles`` whose ``[min, max]`` range holds every input shape.

        Raises ``InvalidArgument`` naming each profile's ranges when none does.
        """
        for profile in profiles:
            if all(_within(shapes[t.name], *t.ranges[profile]) for t in self.inputs):
                return profile
        given = ", ".join(f"{n}={list(s)}" for n, s in shapes.items())
        accepted = "; ".join(
            f"profile {p}: "
            + ", ".join(
                f"{t.name} {list(t.ranges[p][0])}..{list(t.ranges[p][1])}" for t in self.inputs
            )
            for p in profiles
        )
        raise InvalidArgument(
            f"no optimisation profile of the TensorRT engine accepts the input shapes {given} "
            f"({accepted})"
        )

    def max_input_shape(self, name: str, profile: int) -> Shape:
        """The largest shape input ``name`` may take in ``profile``."""
        for t in self.inputs:
            if t.name == name:
                return t.ranges[profile][1]
        raise KeyError(name)


def _within(shape: Shape, low: Shape, high: Shape) -> bool:
    return len(shape) == len(low) and all(
        lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)
    )


def nbytes(shape: Shape, dtype: np.dtype) -> int:
    """Bytes of a dense tensor of ``shape``."""
    return math.prod(shape) * dtype.itemsize


def read_engine_io(trt: Any, engine: Any, path: Path) -> EngineIO:
    """Discover the engine's I/O tensors, their v2 datatypes, shapes and profile ranges."""
    inputs: list[EngineTensor] = []
    outputs: list[EngineTensor] = []
    num_profiles = max(int(engine.num_optimization_profiles), 1)
    for index in range(int(engine.num_io_tensors)):
        name = str(engine.get_tensor_name(index))
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        if is_input and bool(getattr(engine, "is_shape_inference_io", lambda _: False)(name)):
            raise ConfigError(
                f"TensorRT engine input '{name}' is a shape tensor, which Volley's TensorRT "
                "backend does not serve",
                path=str(path),
                hint="rebuild the engine so that shapes come from the execution tensors' dims",
            )
        type_name = _enum_name(engine.get_tensor_dtype(name))
        datatype = TRT_DATATYPES.get(type_name)
        if datatype is None:
            raise ConfigError(
                f"TensorRT engine tensor '{name}' has type {type_name}, which the protocol "
                "cannot carry",
                path=str(path),
                hint="rebuild the engine with FP32, FP16, BF16, INT8, INT32, INT64, BOOL or "
                "UINT8 inputs and outputs (keep FP8/INT4 inside the network)",
            )
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        ranges: tuple[tuple[Shape, Shape], ...] = ()
        if is_input:
            ranges = tuple(_profile_range(engine, name, shape, p) for p in range(num_profiles))
        tensor = EngineTensor(name, is_input, datatype, shape, ranges)
        (inputs if is_input else outputs).append(tensor)
    if not outputs:
        raise ConfigError(
            "TensorRT engine has no outputs", path=str(path), hint="rebuild the engine"
        )
    return EngineIO(tuple(inputs), tuple(outputs), num_profiles)


def _profile_range(engine: Any, name: str, shape: Shape, profile: int) -> tuple[Shape, Shape]:
    if -1 not in shape:
        return shape, shape
    low, _opt, high = engine.get_tensor_profile_shape(name, profile)
    return tuple(int(d) for d in low), tuple(int(d) for d in high)


def _enum_name(value: Any) -> str:
    name = getattr(value, "name", None)
    return str(name) if name is not None else str(value).rsplit(".", 1)[-1]


class EngineRuntime:
    """A TensorRT runtime whose log goes to Volley's logger; deserialises engines."""

    def __init__(self, trt: Any) -> None:
        self._trt = trt
        self._logger = _make_logger(trt)
        try:
            self._runtime = trt.Runtime(self._logger)
        except Exception as exc:
            raise ConfigError(
                f"TensorRT {trt.__version__} could not start: {exc}",
                hint="TensorRT needs an NVIDIA GPU and driver visible to this process",
            ) from exc

    def deserialize(self, plan: bytes, path: Path) -> Any:
        """The engine of ``plan``; ``ConfigError`` when this TensorRT cannot read it."""
        with _DESERIALIZE_LOCK:
            self._logger.errors.clear()
            engine = self._runtime.deserialize_cuda_engine(plan)
            reason = "; ".join(self._logger.errors)
        if engine is None:
            version = ".".join(str(self._trt.__version__).split(".")[:2])
            said = f" (TensorRT: {reason})" if reason else ""
            raise ConfigError(
                f"{path.name} could not be deserialised by TensorRT {version}: it was built by "
                f"another TensorRT version or for another GPU{said}",
                path=str(path),
                hint=f"rebuild it with TensorRT {version} on this GPU model, e.g. "
                f"trtexec --onnx=model.onnx --saveEngine={path.name}",
            )
        return engine


def _make_logger(trt: Any) -> Any:
    """An ``ILogger`` that forwards to logging and keeps the errors of the current call."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, message: str) -> None:
            python_level = levels.get(level, logging.INFO)
            if python_level >= logging.ERROR:
                self.errors.append(str(message))
            log.log(python_level, "TensorRT: %s", message)

    return _Logger()


def check_spec(spec: ModelSpec, io: EngineIO, path: Path) -> tuple[int, ...]:
    """The profiles the instances may use; ``ConfigError`` where the config and engine differ."""
    profiles = _profiles(spec, io, path)
    if spec.max_batch_size > 0:
        limit = io.max_batch_size(profiles)
        if not io.can_batch():
            raise ConfigError(
                f"model '{spec.name}': max_batch_size is {spec.max_batch_size} but the TensorRT "
                "engine cannot batch (not every tensor has a dynamic first dimension)",
                path=str(path),
                hint="set max_batch_size: 0, or rebuild the engine with a dynamic batch dimension",
            )
        if spec.max_batch_size > limit:
            raise ConfigError(
                f"model '{spec.name}': max_batch_size is {spec.max_batch_size} but the TensorRT "
                f"engine's optimisation profile(s) {list(profiles)} accept batches of at most "
                f"{limit}",
                path=str(path),
                hint=f"set max_batch_size: {limit} or less, or rebuild the engine with a larger "
                "maximum batch in its optimisation profile",
            )
    engine = {t.name: t for t in (*io.inputs, *io.outputs)}
    for tensor in (*spec.inputs, *spec.outputs):
        found = engine.get(tensor.name)
        if found is None or found.datatype != tensor.datatype:
            have = f"type {found.datatype}" if found is not None else "no such tensor"
            raise ConfigError(
                f"model '{spec.name}': configured tensor '{tensor.name}' ({tensor.datatype}) "
                f"does not match the TensorRT engine ({have})",
                path=str(path),
                hint="every version's engine must have the configured inputs and outputs",
            )
    return profiles


def _profiles(spec: ModelSpec, io: EngineIO, path: Path) -> tuple[int, ...]:
    """``instance_group { profile: [...] }`` as indices, or every profile of the engine."""
    named = sorted({p for group in spec.config.instance_group for p in group.profile})
    if not named:
        return tuple(range(io.num_profiles))
    try:
        indices = tuple(sorted({int(p) for p in named}))
    except ValueError as exc:
        raise ConfigError(
            f"model '{spec.name}': instance_group profile names must be indices ({exc})",
            hint='e.g. profile: [ "0" ]',
        ) from exc
    bad = [p for p in indices if not 0 <= p < io.num_profiles]
    if bad:
        raise ConfigError(
            f"model '{spec.name}': instance_group names profile(s) {bad} but the TensorRT engine "
            f"has {io.num_profiles}",
            path=str(path),
            hint=f"use profile indices 0..{io.num_profiles - 1}",
        )
    return indices
