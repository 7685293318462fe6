"""The on-disk layout of a model repository: model directories, versions, model files.

``<repository>/<model>/<version>/model.onnx`` (or ``model.plan``), with Triton's rules for
which directory names count as versions and which file a version serves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from volley.errors import ConfigError

logger = logging.getLogger("volley.repository")

#: Backend name -> the model file a version directory holds by default.
DEFAULT_MODEL_FILENAMES: Final[dict[str, str]] = {
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
}

#: Sub-directories of a model directory that are never versions.
RESERVED_DIRS: Final[frozenset[str]] = frozenset({"warmup", "initial_state", "configs"})


def list_models(repository: Path) -> dict[str, Path]:
    """Model name -> model directory for every non-hidden sub-directory, sorted by name."""
    if not repository.is_dir():
        raise ConfigError(
            "model repository does not exist or is not a directory",
            path=str(repository),
            hint="pass the directory that holds one sub-directory per model",
        )
    return {
        entry.name: entry
        for entry in sorted(repository.iterdir(), key=lambda p: p.name)
        if entry.is_dir() and not entry.name.startswith(".")
    }


def version_of_dir(name: str) -> int | None:
    """Version number of a directory name, or None when it is not a version directory.

    Only positive base-10 integers without leading zeros count: ``"01"`` and ``"0"`` do not.
    """
    if not name.isascii() or not name.isdigit() or name.startswith("0"):
        return None
    return int(name)


def list_versions(model_dir: Path) -> dict[int, Path]:
    """Version number -> version directory of a model, sorted by version."""
    versions: dict[int, Path] = {}
    for entry in model_dir.iterdir():
        if not entry.is_dir() or entry.name.startswith(".") or entry.name in RESERVED_DIRS:
            continue
        version = version_of_dir(entry.name)
        if version is None:
            logger.warning(
                "ignoring directory '%s' of model '%s': not a version number",
                entry.name,
                model_dir.name,
            )
            continue
        versions[version] = entry
    return dict(sorted(versions.items()))


def detect_backend(versions: dict[int, Path], default_model_filename: str = "") -> str | None:
    """Guess the backend of a model whose config names neither platform nor backend.

    A ``default_model_filename`` ending in ``.plan`` or ``.onnx`` decides; otherwise the
    version directories are inspected in order: a ``model.plan`` file means TensorRT, a
    ``model.onnx`` file or directory means ONNX Runtime.
    """
    if default_model_filename:
        if default_model_filename.endswith((".plan", ".engine")):
            return "tensorrt"
        if default_model_filename.endswith(".onnx"):
            return "onnxruntime"
        return None
    for version_dir in versions.values():
        if (version_dir / DEFAULT_MODEL_FILENAMES["tensorrt"]).is_file():
            return "tensorrt"
        if (version_dir / DEFAULT_MODEL_FILENAMES["onnxruntime"]).exists():
            return "onnxruntime"
    return None


def model_file(version_dir: Path, backend: str, default_model_filename: str = "") -> Path | None:
    """The file a version serves, or None when it is missing.

    ``default_model_filename`` overrides the backend's default name. For ONNX Runtime the name
    may be a directory (large models with external data) holding ``model.onnx``.
    """
    filename = default_model_filename or DEFAULT_MODEL_FILENAMES.get(backend, "")
    if not filename:
        return None
    candidate = version_dir / filename
    if not inside(candidate, version_dir):
        raise ConfigError(
            f"default_model_filename '{filename}' points outside the version directory",
            path=str(version_dir),
            hint="name a file inside the version directory, e.g. model.onnx",
        )
    if candidate.is_file():
        return candidate
    if backend == "onnxruntime" and candidate.is_dir():
        inner = candidate / DEFAULT_MODEL_FILENAMES["onnxruntime"]
        if inner.is_file():
            return inner
    return None


def inside(path: Path, directory: Path) -> bool:
    """True when ``path`` (symbolic links resolved) lies inside ``directory``."""
    try:
        path.resolve().relative_to(directory.resolve())
    except (ValueError, OSError):
        return False
    return True
