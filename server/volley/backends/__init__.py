"""Model execution backends (ONNX Runtime, TensorRT), looked up by name."""

from __future__ import annotations

from pathlib import Path

from volley.backends.base import Backend
from volley.errors import ConfigError
from volley.model.signature import ModelIO


def get_backend(name: str) -> Backend:
    """Return the backend registered under ``name`` (``onnxruntime`` or ``tensorrt``)."""
    if name == "onnxruntime":
        from volley.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "tensorrt":
        from volley.backends.tensorrt import TensorRTBackend

        return TensorRTBackend()
    raise ConfigError(f"unsupported backend '{name}'", hint="use onnxruntime or tensorrt")


class BackendInspector:
    """Answers the repository's questions about model files by asking their backends."""

    def read_signature(self, backend: str, model_path: Path) -> ModelIO | None:
        """The file's signature, or None when ``backend`` cannot read one (or is unknown)."""
        try:
            found = get_backend(backend)
        except ConfigError:
            return None
        return found.read_signature(model_path)

    def verify(self, backend: str, model_path: Path) -> None:
        """Raise ``ConfigError`` when ``backend`` cannot open ``model_path``."""
        get_backend(backend).verify(model_path)
