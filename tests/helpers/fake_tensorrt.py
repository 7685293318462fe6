"""A fake ``tensorrt`` module and CUDA runtime (``cudart``) for testing without a GPU.

``FakeGpu`` holds both fakes and what they share: device memory (numpy byte arrays keyed by
fake pointers), pinned host memory (real ctypes buffers at real addresses, so the backend can
view them), streams with their queued work, and a log of every call. Engines are registered by
their plan bytes and compute their outputs with numpy; a plan that is not registered
deserialises to None, as an engine built by another TensorRT version does. Work queued on a
stream runs only when the stream is synchronised, in order, so a backend that forgets to
synchronise (or copies in the wrong order) reads stale memory.

Only the calls Volley's TensorRT backend makes are emulated, with TensorRT 10 and cuda-python
signatures. Test code only: never shipped.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import itertools
import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Shape = tuple[int, ...]


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


NUMPY = {
    DataType.FLOAT: np.dtype(np.float32),
    DataType.HALF: np.dtype(np.float16),
    DataType.BF16: np.dtype(np.uint16),
    DataType.INT8: np.dtype(np.int8),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.BOOL: np.dtype(np.bool_),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.FP8: np.dtype(np.uint8),
    DataType.INT4: np.dtype(np.uint8),
}


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class ILogger:
    """``trt.ILogger``: subclasses implement ``log(severity, message)``."""

    class Severity(enum.Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass

    def log(self, severity: ILogger.Severity, message: str) -> None:
        raise NotImplementedError


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevice = 101


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


# -- engines ----------------------------------------------------------------------------------


@dataclass
class FakeTensor:
    """One I/O tensor of a fake engine; ``profiles`` holds (min, opt, max) per profile."""

    name: str
    shape: Shape
    dtype: DataType = DataType.FLOAT
    is_input: bool = True
    profiles: Sequence[tuple[Shape, Shape, Shape]] = ()


def tensor_in(
    name: str,
    shape: Shape,
    profiles: Sequence[tuple[Shape, Shape, Shape]] = (),
    dtype: DataType = DataType.FLOAT,
) -> FakeTensor:
    return FakeTensor(name, shape, dtype, True, profiles)


def tensor_out(name: str, shape: Shape, dtype: DataType = DataType.FLOAT) -> FakeTensor:
    return FakeTensor(name, shape, dtype, False)


@dataclass
class EngineSpec:
    """What a fake engine declares and computes (inputs -> outputs, with numpy)."""

    tensors: list[FakeTensor]
    compute: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    num_profiles: int = 1
    #: Outputs whose shape is known only after execution (TensorRT reports -1 dims).
    data_dependent: frozenset[str] = frozenset()


class FakeEngine:
    """``trt.ICudaEngine`` (TensorRT 10 names)."""

    def __init__(self, gpu: FakeGpu, spec: EngineSpec) -> None:
        self.gpu, self.spec, self.device = gpu, spec, gpu.device
        self._by_name = {t.name: t for t in spec.tensors}

    @property
    def num_io_tensors(self) -> int:
        return len(self.spec.tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return self.spec.num_profiles

    def get_tensor_name(self, index: int) -> str:
        return self.spec.tensors[index].name

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if self._by_name[name].is_input else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._by_name[name].dtype

    def get_tensor_shape(self, name: str) -> Shape:
        return self._by_name[name].shape

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[Shape]:
        tensor = self._by_name[name]
        assert tensor.is_input and 0 <= profile < self.spec.num_profiles
        return list(tensor.profiles[profile])

    def is_shape_inference_io(self, name: str) -> bool:
        return False

    def create_execution_context(self) -> FakeContext:
        context = FakeContext(self)
        self.gpu.contexts.append(context)
        self.gpu.log("create_execution_context", context.id, self.gpu.device)
        return context

    def range_of(self, name: str, profile: int) -> tuple[Shape, Shape]:
        tensor = self._by_name[name]
        if -1 not in tensor.shape:
            return tensor.shape, tensor.shape
        low, _opt, high = tensor.profiles[profile]
        return low, high


class FakeContext:
    """``trt.IExecutionContext``: shapes, addresses, profile, and ``execute_async_v3``."""

    _ids = itertools.count()

    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.gpu, self.device = engine, engine.gpu, engine.gpu.device
        self.id = next(self._ids)
        self.profile = 0
        self.input_shapes: dict[str, Shape] = {}
        self.addresses: dict[str, int] = {}

    def _inputs(self) -> list[FakeTensor]:
        return [t for t in self.engine.spec.tensors if t.is_input]

    def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
        self.gpu.log("set_optimization_profile_async", self.id, profile, stream)
        if not 0 <= profile < self.engine.spec.num_profiles:
            return False
        self.profile = profile
        self.input_shapes.clear()
        return True

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        shape = tuple(int(d) for d in shape)
        self.gpu.log("set_input_shape", self.id, name, shape)
        low, high = self.engine.range_of(name, self.profile)
        if len(shape) != len(low) or not all(
            lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)
        ):
            return False
        self.input_shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> Shape:
        tensor = self.engine._by_name[name]
        if tensor.is_input:
            return self.input_shapes.get(name, tensor.shape)
        if name in self.engine.spec.data_dependent:
            return tensor.shape
        if any(t.name not in self.input_shapes for t in self._inputs()):
            return tensor.shape
        zeros = {
            t.name: np.zeros(self.input_shapes[t.name], NUMPY[t.dtype]) for t in self._inputs()
        }
        return tuple(self.engine.spec.compute(zeros)[name].shape)

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.gpu.log("set_tensor_address", self.id, name, pointer)
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        gpu = self.gpu
        stream = gpu.streams.get(stream_handle)
        gpu.log("execute_async_v3", self.id, stream.id if stream else None, gpu.device)
        if gpu.device != self.device or stream is None or stream.device != self.device:
            return False  # TensorRT needs the context's device current and a stream on it
        tensors = self.engine.spec.tensors
        if any(t.name not in self.addresses for t in tensors):
            return False
        if any(t.name not in self.input_shapes for t in self._inputs()):
            return False
        shapes = dict(self.input_shapes)
        addresses = dict(self.addresses)

        def run() -> None:
            inputs = {}
            for t in self._inputs():
                shape, dtype = shapes[t.name], NUMPY[t.dtype]
                memory = gpu.device_bytes(addresses[t.name], self.device)
                size = math.prod(shape) * dtype.itemsize
                inputs[t.name] = memory[:size].view(dtype).reshape(shape).copy()
            for name, value in self.engine.spec.compute(inputs).items():
                memory = gpu.device_bytes(addresses[name], self.device)
                raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
                assert raw.size <= memory.size, f"output '{name}' overflows its device buffer"
                memory[: raw.size] = raw

        stream.queue.append(("execute", run))
        return True


class FakeRuntime:
    """``trt.Runtime(logger)``."""

    def __init__(self, gpu: FakeGpu, logger: ILogger) -> None:
        assert isinstance(logger, ILogger)
        self.gpu, self.logger = gpu, logger

    def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
        spec = self.gpu.plans.get(bytes(plan))
        self.gpu.log("deserialize_cuda_engine", self.gpu.device, spec is not None)
        if spec is None:
            self.logger.log(
                ILogger.Severity.ERROR,
                "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine "
                "plan file is not compatible with this version of TensorRT, expecting library "
                f"version {self.gpu.version} got 8.6.1.6, please rebuild.)",
            )
            return None
        engine = FakeEngine(self.gpu, spec)
        self.gpu.engines.append(engine)
        return engine


# -- CUDA runtime -----------------------------------------------------------------------------


@dataclass
class FakeStream:
    """``cudaStream_t``: ``int(stream)`` is its handle, as in cuda-python."""

    id: int
    device: int
    queue: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def __int__(self) -> int:
        return 0x5000 + self.id


class FakeCudart:
    """cuda-python's ``cudart``: each call returns ``(error, *values)``."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind

    def __init__(self, gpu: FakeGpu) -> None:
        self._gpu = gpu

    def _fail(self, function: str) -> cudaError_t | None:
        return self._gpu.failures.pop(function, None)

    def cudaSetDevice(self, device: int) -> tuple[Any, ...]:
        gpu = self._gpu
        gpu.log("cudaSetDevice", device)
        if not 0 <= device < gpu.device_count:
            return (cudaError_t.cudaErrorInvalidDevice,)
        gpu.device = device
        return (cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self) -> tuple[Any, ...]:
        gpu = self._gpu
        stream = FakeStream(next(gpu.ids), gpu.device)
        gpu.streams[int(stream)] = stream
        gpu.log("cudaStreamCreate", stream.id, gpu.device)
        return cudaError_t.cudaSuccess, stream

    def cudaStreamDestroy(self, stream: FakeStream) -> tuple[Any, ...]:
        self._gpu.log("cudaStreamDestroy", stream.id)
        if self._gpu.streams.pop(int(stream), None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMalloc(self, size: int) -> tuple[Any, ...]:
        gpu = self._gpu
        error = self._fail("cudaMalloc")
        if error is not None:
            return error, 0
        pointer = 0x7F00_0000_0000 + next(gpu.ids) * 0x1_0000_0000
        gpu.device_memory[pointer] = (gpu.device, np.zeros(size, np.uint8))
        gpu.log("cudaMalloc", pointer, size, gpu.device)
        return cudaError_t.cudaSuccess, pointer

    def cudaFree(self, pointer: int) -> tuple[Any, ...]:
        self._gpu.log("cudaFree", pointer)
        if self._gpu.device_memory.pop(pointer, None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, size: int) -> tuple[Any, ...]:
        gpu = self._gpu
        error = self._fail("cudaMallocHost")
        if error is not None:
            return error, 0
        buffer = (ctypes.c_ubyte * size)()
        pointer = ctypes.addressof(buffer)
        gpu.host_memory[pointer] = buffer
        gpu.log("cudaMallocHost", pointer, size, gpu.device)
        return cudaError_t.cudaSuccess, pointer

    def cudaFreeHost(self, pointer: int) -> tuple[Any, ...]:
        self._gpu.log("cudaFreeHost", pointer)
        if self._gpu.host_memory.pop(pointer, None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(
        self, dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: FakeStream
    ) -> tuple[Any, ...]:
        gpu = self._gpu
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            device, memory = gpu.device_memory[dst]
            assert count <= len(gpu.host_memory[src]) and count <= memory.size
            gpu.log("H2D", stream.id, dst, count)

            def run() -> None:
                memory[:count] = np.frombuffer(ctypes.string_at(src, count), np.uint8)

            stream.queue.append(("H2D", run))
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            device, memory = gpu.device_memory[src]
            assert count <= len(gpu.host_memory[dst]) and count <= memory.size
            gpu.log("D2H", stream.id, src, count)

            def run() -> None:
                ctypes.memmove(dst, memory[:count].tobytes(), count)

            stream.queue.append(("D2H", run))
        else:
            return (cudaError_t.cudaErrorInvalidValue,)
        assert device == stream.device, "copy to or from another GPU's memory on this stream"
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: FakeStream) -> tuple[Any, ...]:
        gpu = self._gpu
        gpu.log("cudaStreamSynchronize", stream.id)
        for name, work in stream.queue:
            work()
            gpu.ran.append((stream.id, name))
        stream.queue.clear()
        return (cudaError_t.cudaSuccess,)


class FakeGpu:
    """The fakes and their shared state; ``modules()`` replaces the backend's ``_modules``."""

    def __init__(self, device_count: int = 2, version: str = "10.3.0.26") -> None:
        self.device_count, self.version = device_count, version
        self.device = 0
        self.ids = itertools.count(1)
        #: Every call, in order: (function, details...).
        self.calls: list[tuple[Any, ...]] = []
        #: Queued stream work as it ran: (stream id, "H2D" | "execute" | "D2H").
        self.ran: list[tuple[int, str]] = []
        self.plans: dict[bytes, EngineSpec] = {}
        self.engines: list[FakeEngine] = []
        self.contexts: list[FakeContext] = []
        self.streams: dict[int, FakeStream] = {}
        self.device_memory: dict[int, tuple[int, np.ndarray]] = {}
        self.host_memory: dict[int, ctypes.Array[ctypes.c_ubyte]] = {}
        #: function name -> the error its next call returns.
        self.failures: dict[str, cudaError_t] = {}
        self.cudart = FakeCudart(self)
        self.trt = types.SimpleNamespace(
            __version__=version,
            DataType=DataType,
            TensorIOMode=TensorIOMode,
            ILogger=ILogger,
            Runtime=functools.partial(FakeRuntime, self),
        )

    def modules(self) -> tuple[Any, Any]:
        return self.trt, self.cudart

    def register(self, plan: bytes, spec: EngineSpec) -> bytes:
        self.plans[plan] = spec
        return plan

    def log(self, *call: Any) -> None:
        self.calls.append(call)

    def named(self, function: str) -> list[tuple[Any, ...]]:
        """The logged calls of ``function``, without its name."""
        return [c[1:] for c in self.calls if c[0] == function]

    def device_bytes(self, pointer: int, device: int) -> np.ndarray:
        owner, memory = self.device_memory[pointer]
        assert owner == device, f"pointer {pointer:#x} is on GPU {owner}, not GPU {device}"
        return memory

    def live(self) -> dict[str, int]:
        """What is still allocated: device buffers, pinned buffers, streams."""
        return {
            "device": len(self.device_memory),
            "pinned": len(self.host_memory),
            "streams": len(self.streams),
        }
