"""Model execution backends (ONNX Runtime, TensorRT)."""

from __future__ import annotations

from volley.backends.base import Backend
from volley.errors import ConfigError


def get_backend(name: str) -> Backend:
    """Return the backend registered under ``name`` (``onnxruntime`` or ``tensorrt``)."""
    if name == "onnxruntime":
        from volley.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "tensorrt":
        raise ConfigError(
            "the TensorRT backend is not part of this build",
            hint="serve the model as ONNX (model.onnx) with the onnxruntime backend",
        )
    raise ConfigError(f"unsupported backend '{name}'", hint="use onnxruntime or tensorrt")
