"""TensorRT backend: serves ``model.plan`` engines on NVIDIA GPUs, as Triton's does.

Each instance owns one execution context and one CUDA stream on its GPU, with a device buffer
and a pinned host buffer per I/O tensor, sized once for the largest shapes of the engine's
optimisation profiles. ``tensorrt`` and ``cuda-python`` are imported when an engine is read or
loaded, never by ``import volley``, through ``_modules`` (which tests replace with fakes).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volley.backends.base import Backend, LoadedModel, ModelInstance
from volley.backends.tensorrt_engine import (
    EngineIO,
    EngineRuntime,
    check_spec,
    nbytes,
    read_engine_io,
)
from volley.errors import ConfigError, Internal, InvalidArgument, ResourceExhausted
from volley.model.signature import ModelIO
from volley.model.spec import ModelSpec

log = logging.getLogger("volley.backends.tensorrt")

_INSTALL_HINT = "install volley-server[tensorrt] (tensorrt and cuda-python) where a GPU is visible"


def _modules() -> tuple[Any, Any]:
    """``(tensorrt, cudart)``: the TensorRT module and cuda-python's CUDA runtime bindings."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise ConfigError(
            f"the TensorRT backend needs the tensorrt package, which is not installed ({exc})",
            hint=_INSTALL_HINT,
        ) from exc
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return trt, importlib.import_module(name)
        except ImportError:
            continue
    raise ConfigError(
        "the TensorRT backend needs cuda-python (cuda.bindings.runtime), which is not installed",
        hint=_INSTALL_HINT,
    )


class Cuda:
    """cuda-python's runtime calls, each checked: a call returns ``(error, *values)``."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart
        self._success = cudart.cudaError_t.cudaSuccess
        self.h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def call(self, function: str, *args: Any) -> Any:
        """Call ``cudart.<function>`` and return its value (or None).

        A CUDA error raises ``ResourceExhausted`` when memory ran out, else ``Internal``.
        """
        result = getattr(self.rt, function)(*args)
        error = result[0]
        if error != self._success:
            name = getattr(error, "name", str(error))
            if name == "cudaErrorMemoryAllocation":
                raise ResourceExhausted(f"CUDA {function} failed: out of GPU or pinned memory")
            raise Internal(f"CUDA {function} failed: {name}")
        return result[1] if len(result) > 1 else None


@dataclass
class _Buffer:
    """The device buffer of one I/O tensor and its pinned host staging buffer."""

    capacity: int
    device: int
    host: int
    #: The pinned host buffer as bytes (a view of ``host``).
    staging: np.ndarray


class TensorRTInstance(ModelInstance):
    """One execution context and CUDA stream on one GPU; used by one thread at a time."""

    def __init__(
        self,
        spec: ModelSpec,
        engine: Any,
        io: EngineIO,
        *,
        cuda: Cuda,
        device: int,
        profiles: tuple[int, ...],
        keep_alive: Any = None,
    ) -> None:
        self._cuda, self.device, self._io, self._profiles = cuda, device, io, profiles
        #: The engine and runtime must outlive the context.
        self._engine, self._keep_alive = engine, keep_alive
        self._buffers: dict[str, _Buffer] = {}
        self._context: Any = None
        self._stream: Any = None
        self._batched = spec.max_batch_size > 0
        self._in_reshape = {t.name: t.reshape for t in spec.inputs if t.reshape is not None}
        self._out_reshape = {
            t.name: t.dims for t in spec.outputs if t.reshape is not None and -1 not in t.dims
        }
        try:
            cuda.call("cudaSetDevice", device)
            self._stream = cuda.call("cudaStreamCreate")
            self._handle = int(self._stream)
            self._context = engine.create_execution_context()
            if self._context is None:
                raise ConfigError(
                    f"model '{spec.name}': TensorRT could not create an execution context on "
                    f"GPU {device}",
                    hint="the GPU may be out of memory; lower instance_group count",
                )
            capacities = self._capacities(spec.name)
            for name, capacity in capacities.items():
                self._buffers[name] = self._allocate(capacity)
            self._profile = profiles[0]
            self._use_profile(self._profile)
        except BaseException:
            self.close()
            raise

    def _capacities(self, model: str) -> dict[str, int]:
        """Bytes per tensor: the largest over the profiles, at each profile's max input shapes."""
        capacities = {t.name: 0 for t in (*self._io.inputs, *self._io.outputs)}
        for profile in self._profiles:
            self._use_profile(profile)
            for t in self._io.inputs:
                shape = self._io.max_input_shape(t.name, profile)
                if not self._context.set_input_shape(t.name, shape):
                    raise ConfigError(
                        f"model '{model}': TensorRT rejects the maximum shape {list(shape)} of "
                        f"input '{t.name}' in optimisation profile {profile}"
                    )
                capacities[t.name] = max(capacities[t.name], nbytes(shape, t.dtype))
            for t in self._io.outputs:
                shape = tuple(int(d) for d in self._context.get_tensor_shape(t.name))
                if any(d < 0 for d in shape):
                    raise ConfigError(
                        f"model '{model}': TensorRT output '{t.name}' has a data-dependent "
                        f"shape {list(shape)}, which Volley's TensorRT backend does not serve",
                        hint="rebuild the engine so that output shapes follow the input shapes",
                    )
                capacities[t.name] = max(capacities[t.name], nbytes(shape, t.dtype))
        self._cuda.call("cudaStreamSynchronize", self._stream)
        return capacities

    def _allocate(self, capacity: int) -> _Buffer:
        size = max(capacity, 1)
        device = int(self._cuda.call("cudaMalloc", size))
        try:
            host = int(self._cuda.call("cudaMallocHost", size))
        except BaseException:
            self._cuda.call("cudaFree", device)
            raise
        staging = np.ctypeslib.as_array((ctypes.c_ubyte * size).from_address(host))
        return _Buffer(capacity, device, host, staging)

    def _use_profile(self, profile: int) -> None:
        if not self._context.set_optimization_profile_async(profile, self._handle):
            raise Internal(f"TensorRT could not select optimisation profile {profile}")
        for name, buffer in self._buffers.items():
            self._context.set_tensor_address(name, buffer.device)

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: set the shapes, copy the inputs in, execute, copy out, synchronise.

        Inputs are staged in pinned host memory, copied to the device with ``cudaMemcpyAsync``
        on this instance's stream, run with ``execute_async_v3`` and copied back; the outputs
        are fresh arrays, never views of the pinned buffers. ``cudaMemcpyAsync``,
        ``execute_async_v3`` and ``cudaStreamSynchronize`` release the GIL in cuda-python and
        TensorRT, so other threads run while the GPU works.
        """
        cuda, context, stream = self._cuda, self._context, self._stream
        arrays = {t.name: self._input(t.name, t.dtype, inputs) for t in self._io.inputs}
        profile = self._io.select_profile({n: a.shape for n, a in arrays.items()}, self._profiles)
        cuda.call("cudaSetDevice", self.device)
        if profile != self._profile:
            self._use_profile(profile)
            self._profile = profile
        for name, array in arrays.items():
            if not context.set_input_shape(name, array.shape):
                raise InvalidArgument(f"TensorRT rejected shape {list(array.shape)} for '{name}'")
        sizes: dict[str, tuple[tuple[int, ...], int]] = {}
        for t in self._io.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(t.name))
            size = nbytes(shape, t.dtype)
            if any(d < 0 for d in shape) or size > self._buffers[t.name].capacity:
                raise Internal(f"TensorRT output '{t.name}' has shape {list(shape)}: no buffer")
            sizes[t.name] = shape, size
        for name, array in arrays.items():
            buffer = self._buffers[name]
            buffer.staging[: array.nbytes] = array.reshape(-1).view(np.uint8)
            cuda.call("cudaMemcpyAsync", buffer.device, buffer.host, array.nbytes, cuda.h2d, stream)
        if not context.execute_async_v3(self._handle):
            cuda.call("cudaStreamSynchronize", stream)
            raise Internal("TensorRT failed to enqueue the batch (see the server log)")
        for name, (_, size) in sizes.items():
            buffer = self._buffers[name]
            cuda.call("cudaMemcpyAsync", buffer.host, buffer.device, size, cuda.d2h, stream)
        cuda.call("cudaStreamSynchronize", stream)
        out: dict[str, np.ndarray] = {}
        for t in self._io.outputs:
            shape, size = sizes[t.name]
            array = self._buffers[t.name].staging[:size].view(t.dtype).reshape(shape).copy()
            dims = self._out_reshape.get(t.name)
            if dims is not None:
                array = array.reshape(((array.shape[0],) if self._batched else ()) + dims)
            out[t.name] = array
        return out

    def _input(self, name: str, dtype: np.dtype, inputs: dict[str, np.ndarray]) -> np.ndarray:
        array = inputs.get(name)
        if array is None:
            raise InvalidArgument(f"TensorRT engine input '{name}' is missing from the request")
        shape = self._in_reshape.get(name)
        if shape is not None:
            array = array.reshape(((array.shape[0],) if self._batched else ()) + shape)
        if array.dtype != dtype:
            raise InvalidArgument(
                f"input '{name}' has numpy dtype {array.dtype}, the engine expects {dtype}"
            )
        return array if array.flags.c_contiguous else array.copy(order="C")

    def close(self) -> None:
        """Drop the context, then free the buffers and the stream (safe to call twice)."""
        if self._stream is not None or self._buffers:
            self._quietly("cudaSetDevice", self.device)
        if self._stream is not None:
            self._quietly("cudaStreamSynchronize", self._stream)  # no copy still in flight
        self._context = None
        for buffer in self._buffers.values():
            self._quietly("cudaFree", buffer.device)
            self._quietly("cudaFreeHost", buffer.host)
        self._buffers.clear()
        if self._stream is not None:
            self._quietly("cudaStreamDestroy", self._stream)
            self._stream = None
        self._engine = self._keep_alive = None

    def _quietly(self, function: str, *args: Any) -> None:
        try:
            self._cuda.call(function, *args)
        except (Internal, ResourceExhausted) as exc:
            log.warning("while releasing a TensorRT instance on GPU %d: %s", self.device, exc)


class TensorRTBackend(Backend):
    """Deserialises ``model.plan`` per GPU and creates one context per configured instance."""

    name = "tensorrt"

    def load(self, spec: ModelSpec, model_path: Path) -> LoadedModel:
        trt, cudart = _modules()
        cuda = Cuda(cudart)
        plan = _read_plan(model_path)
        runtime = EngineRuntime(trt)
        devices = spec.gpus or (0,)
        per_device = max(spec.instance_count // len(devices), 1)
        instances: list[ModelInstance] = []
        try:
            for device in devices:
                cuda.call("cudaSetDevice", device)
                engine = runtime.deserialize(plan, model_path)
                io = read_engine_io(trt, engine, model_path)
                profiles = check_spec(spec, io, model_path)
                for index in range(per_device):
                    if index > 0 and io.dynamic:
                        # an optimisation profile serves one context at a time: with dynamic
                        # shapes each context gets an engine of its own, as Triton does
                        engine = runtime.deserialize(plan, model_path)
                    instances.append(
                        TensorRTInstance(
                            spec,
                            engine,
                            io,
                            cuda=cuda,
                            device=device,
                            profiles=profiles,
                            keep_alive=runtime,
                        )
                    )
        except BaseException:
            for created in instances:
                created.close()
            raise
        log.info("loaded %s with %d instance(s) on GPU(s) %s", model_path, len(instances), devices)
        return LoadedModel(instances=instances)

    def read_signature(self, model_path: Path) -> ModelIO | None:
        """The engine's signature; None without the tensorrt package (inputs and outputs must
        then be configured)."""
        try:
            trt, _ = _modules()
        except ConfigError:
            return None
        return _read_io(trt, model_path).signature()

    def verify(self, model_path: Path) -> None:
        trt, _ = _modules()
        _read_io(trt, model_path)


def _read_io(trt: Any, model_path: Path) -> EngineIO:
    """Deserialise the engine only to read its I/O; it is released before its runtime."""
    runtime = EngineRuntime(trt)
    engine = runtime.deserialize(_read_plan(model_path), model_path)
    try:
        return read_engine_io(trt, engine, model_path)
    finally:
        del engine


def _read_plan(model_path: Path) -> bytes:
    try:
        return model_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the TensorRT engine: {exc}", path=str(model_path)) from exc
