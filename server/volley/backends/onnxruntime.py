"""ONNX Runtime backend, configured by the same model parameters as Triton's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from volley.backends.base import Backend, LoadedModel, ModelInstance
from volley.backends.onnx_signature import has_random_ops, read_onnx_io
from volley.errors import ConfigError, InvalidArgument
from volley.model.signature import ModelIO
from volley.model.spec import Accelerator, ModelSpec, TensorSpec

log = logging.getLogger("volley.backends.onnxruntime")

_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

_GPU_PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}
_CPU_PROVIDERS = {"openvino": "OpenVINOExecutionProvider"}


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "on", "yes")


def session_options(spec: ModelSpec) -> ort.SessionOptions:
    """Session options from the model's ``parameters`` and ``optimization.graph.level``."""
    opts = ort.SessionOptions()
    params = spec.parameters
    try:
        if "intra_op_thread_count" in params:
            opts.intra_op_num_threads = int(params["intra_op_thread_count"])
        if "inter_op_thread_count" in params:
            opts.inter_op_num_threads = int(params["inter_op_thread_count"])
        if "execution_mode" in params:
            parallel = int(params["execution_mode"]) == 1
            opts.execution_mode = (
                ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
            )
    except ValueError as exc:
        raise ConfigError(
            f"model '{spec.name}': ONNX Runtime thread/mode parameters must be integers ({exc})",
            hint='e.g. parameters { key: "intra_op_thread_count" value: { string_value: "1" } }',
        ) from exc
    if "enable_mem_arena" in params:
        opts.enable_cpu_mem_arena = _flag(params["enable_mem_arena"])
    if "enable_mem_pattern" in params:
        opts.enable_mem_pattern = _flag(params["enable_mem_pattern"])
    if "memory.enable_memory_arena_shrinkage" in params:
        opts.add_session_config_entry(
            "memory.enable_memory_arena_shrinkage", params["memory.enable_memory_arena_shrinkage"]
        )
    if "session.use_device_allocator_for_initializers" in params:
        opts.add_session_config_entry(
            "session.use_device_allocator_for_initializers",
            params["session.use_device_allocator_for_initializers"],
        )
    opts.graph_optimization_level = _GRAPH_LEVELS.get(
        spec.graph_level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    opts.log_severity_level = 3
    return opts


def providers(spec: ModelSpec, device: int = 0) -> list[tuple[str, dict[str, str]]]:
    """Execution providers in Triton's order: GPU accelerators, CUDA, CPU accelerators, CPU."""
    available = set(ort.get_available_providers())
    chosen: list[tuple[str, dict[str, str]]] = []

    def add(accel: Accelerator, table: dict[str, str]) -> None:
        provider = table.get(accel.name)
        if provider is None:
            raise ConfigError(
                f"model '{spec.name}': unknown execution accelerator '{accel.name}'",
                hint=f"use one of {sorted(table)}",
            )
        if provider not in available:
            raise ConfigError(
                f"model '{spec.name}': execution accelerator '{accel.name}' needs {provider}, "
                f"which this onnxruntime build lacks (it has {sorted(available)})",
                hint="install onnxruntime-gpu for GPU providers, or remove the accelerator",
            )
        options = dict(accel.parameters)
        if provider != "OpenVINOExecutionProvider":
            options.setdefault("device_id", str(device))
        chosen.append((provider, options))

    if spec.instance_kind == "GPU":
        for accel in spec.gpu_accelerators:
            add(accel, _GPU_PROVIDERS)
        if "CUDAExecutionProvider" not in available:
            raise ConfigError(
                f"model '{spec.name}' asks for GPU instances, but onnxruntime has no CUDA provider",
                hint="install onnxruntime-gpu, or set instance_group { kind: KIND_CPU }",
            )
        if not any(p == "CUDAExecutionProvider" for p, _ in chosen):
            chosen.append(("CUDAExecutionProvider", {"device_id": str(device)}))
    for accel in spec.cpu_accelerators:
        add(accel, _CPU_PROVIDERS)
    chosen.append(("CPUExecutionProvider", {}))
    return chosen


class OnnxRuntimeInstance(ModelInstance):
    """One ``InferenceSession``; ``run`` releases the GIL while the graph executes."""

    def __init__(self, spec: ModelSpec, session: ort.InferenceSession) -> None:
        self._session = session
        self._output_names = [o.name for o in session.get_outputs()]
        self._in_reshape = _reshapes(spec.inputs, to_backend=True)
        self._out_reshape = _reshapes(spec.outputs, to_backend=False)
        self._batched = spec.max_batch_size > 0
        self._strings = tuple(t.name for t in spec.inputs if t.datatype == "BYTES")
        self._run_options = ort.RunOptions()

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds: dict[str, Any] = inputs
        if self._in_reshape or self._strings:
            feeds = dict(inputs)
            for name in self._strings:
                if name in feeds:
                    feeds[name] = _as_text(feeds[name], name)
            for name, shape in self._in_reshape.items():
                if name in feeds:
                    feeds[name] = _apply(feeds[name], shape, self._batched)
        results = self._session.run(self._output_names, feeds, self._run_options)
        out = dict(zip(self._output_names, results, strict=True))
        for name, shape in self._out_reshape.items():
            if name in out:
                out[name] = _apply(out[name], shape, self._batched)
        return out

    def close(self) -> None:
        del self._session


def _reshapes(tensors: tuple[TensorSpec, ...], *, to_backend: bool) -> dict[str, tuple[int, ...]]:
    """Tensors with ``reshape``: inputs convert to ``reshape``, outputs back to ``dims``."""
    return {
        t.name: (t.reshape if to_backend else t.dims)
        for t in tensors
        if t.reshape is not None and (to_backend or -1 not in t.dims)
    }


def _as_text(array: np.ndarray, name: str) -> np.ndarray:
    """ONNX string tensors hold text: decode BYTES elements as UTF-8."""
    out = np.empty(array.shape, dtype=object)
    flat_out = out.reshape(-1)
    try:
        for i, item in enumerate(array.reshape(-1)):
            flat_out[i] = item.decode("utf-8") if isinstance(item, bytes) else item
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"input '{name}': ONNX string tensors need UTF-8 text, element {i} is not ({exc})"
        ) from exc
    return out


def _apply(array: np.ndarray, shape: tuple[int, ...], batched: bool) -> np.ndarray:
    target = ((array.shape[0],) if batched else ()) + shape
    return array.reshape(target)


class OnnxRuntimeBackend(Backend):
    """Creates one ``InferenceSession`` per configured instance."""

    name = "onnxruntime"

    def load(self, spec: ModelSpec, model_path: Path) -> LoadedModel:
        model_path = _model_file(model_path)
        opts = session_options(spec)
        devices = spec.gpus or (0,)
        per_device = max(spec.instance_count // len(devices), 1)
        instances: list[ModelInstance] = []
        try:
            for device in devices:
                for _ in range(per_device):
                    session = ort.InferenceSession(
                        str(model_path), sess_options=opts, providers=providers(spec, device)
                    )
                    instances.append(OnnxRuntimeInstance(spec, session))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"model '{spec.name}': ONNX Runtime could not load {model_path.name}: {exc}",
                path=str(model_path),
                hint="check the file with `volley repo check`",
            ) from exc
        log.info("loaded %s with %d instance(s)", model_path, len(instances))
        # what it holds is measured by the caller, around the load (memory/probe.py)
        loaded = LoadedModel(instances=instances)
        if spec.config.response_cache.enable:
            loaded.deterministic = not has_random_ops(model_path)
        return loaded

    def check_input(self, name: str, datatype: str, array: np.ndarray) -> None:
        """ONNX string tensors hold text: every BYTES element must be UTF-8."""
        if datatype != "BYTES":
            return
        for i, item in enumerate(array.reshape(-1)):
            if isinstance(item, bytes):
                try:
                    item.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidArgument(
                        f"input '{name}': ONNX string tensors need UTF-8 text, element {i} is "
                        f"not ({exc.reason} at byte {exc.start})"
                    ) from exc

    def read_signature(self, model_path: Path) -> ModelIO:
        return read_onnx_io(_model_file(model_path))

    def verify(self, model_path: Path) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        path = _model_file(model_path)
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConfigError(
                f"ONNX Runtime cannot load the model: {exc}",
                path=str(path),
                hint="check the model with onnx.checker.check_model and that its opset "
                f"is supported by onnxruntime {ort.__version__}",
            ) from exc


def _model_file(model_path: Path) -> Path:
    """A model given as a directory (external data) holds ``model.onnx``."""
    return model_path / "model.onnx" if model_path.is_dir() else model_path
