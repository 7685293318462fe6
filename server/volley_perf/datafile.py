"""Reading user-supplied input data: perf_analyzer's JSON format, or ``NAME.npy`` files."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volley.model.dtypes import NUMPY

from .errors import PerfError
from .target import ModelInfo, TensorMeta


@dataclass(frozen=True)
class Sample:
    """The values of one input in one data entry, flattened in row-major order."""

    values: np.ndarray
    #: The shape the data gives explicitly (JSON ``"shape"`` or the ``.npy`` array's), if any.
    shape: tuple[int, ...] | None


DataEntry = dict[str, Sample]


def load_data(path: Path, model: ModelInfo) -> list[DataEntry]:
    """Load data entries for ``model``'s inputs from a JSON file, a ``.npy`` file or a directory.

    JSON follows perf_analyzer: ``{"data": [{"INPUT": [...]}, ...]}`` where a value is a flat
    list, ``{"content": [...], "shape": [...]}`` or ``{"b64": "..."}`` (raw little-endian
    bytes). A directory holds one ``NAME.npy`` per input; a single ``.npy`` file serves a
    model with one input.
    """
    if path.is_dir():
        return [_load_npy_dir(path, model)]
    if not path.is_file():
        raise PerfError(f"--input-data '{path}': no such file or directory")
    if path.suffix == ".npy":
        if len(model.inputs) != 1:
            names = ", ".join(t.name for t in model.inputs)
            raise PerfError(
                f"--input-data '{path}': the model has several inputs ({names}); "
                "give a directory with one NAME.npy per input"
            )
        return [{model.inputs[0].name: _npy_sample(path, model.inputs[0])}]
    return _load_json(path, model)


def _load_npy_dir(path: Path, model: ModelInfo) -> DataEntry:
    entry: DataEntry = {}
    for tensor in model.inputs:
        file = path / f"{tensor.name}.npy"
        if not file.is_file():
            raise PerfError(f"--input-data '{path}': missing {file.name} for input '{tensor.name}'")
        entry[tensor.name] = _npy_sample(file, tensor)
    return entry


def _npy_sample(file: Path, tensor: TensorMeta) -> Sample:
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PerfError(f"--input-data '{file}': cannot read: {exc}") from None
    return Sample(values=_convert(array.reshape(-1), tensor, str(file)), shape=array.shape)


def _load_json(path: Path, model: ModelInfo) -> list[DataEntry]:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PerfError(f"--input-data '{path}': not valid JSON: {exc}") from None
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PerfError(f"--input-data '{path}': expected {{\"data\": [{{...}}, ...]}}")
    by_name = {t.name: t for t in model.inputs}
    loaded: list[DataEntry] = []
    for index, entry in enumerate(entries):
        where = f"--input-data '{path}' entry {index}"
        if isinstance(entry, list):
            raise PerfError(f"{where}: sequence streams are not supported")
        if not isinstance(entry, dict):
            raise PerfError(f"{where}: expected an object of input names")
        unknown = sorted(set(entry) - set(by_name))
        if unknown:
            raise PerfError(f"{where}: unknown input '{unknown[0]}' (inputs: {', '.join(by_name)})")
        missing = [name for name in by_name if name not in entry]
        if missing:
            raise PerfError(f"{where}: no data for input '{missing[0]}'")
        loaded.append({name: _json_sample(entry[name], by_name[name], where) for name in by_name})
    return loaded


def _json_sample(value: Any, tensor: TensorMeta, where: str) -> Sample:
    shape: tuple[int, ...] | None = None
    if isinstance(value, dict):
        if "shape" in value:
            try:
                shape = tuple(int(d) for d in value["shape"])
            except (TypeError, ValueError):
                raise PerfError(f"{where}: bad shape for '{tensor.name}'") from None
        if "b64" in value:
            return Sample(values=_from_b64(value["b64"], tensor, where), shape=shape)
        if "content" not in value:
            raise PerfError(f"{where}: '{tensor.name}' needs 'content' or 'b64'")
        value = value["content"]
    if not isinstance(value, list):
        value = [value]
    return Sample(values=_convert(value, tensor, where), shape=shape)


def _from_b64(text: Any, tensor: TensorMeta, where: str) -> np.ndarray:
    if tensor.datatype == "BYTES":
        raise PerfError(f"{where}: 'b64' is not supported for BYTES input '{tensor.name}'")
    try:
        raw = base64.b64decode(str(text), validate=True)
        return np.frombuffer(raw, dtype=NUMPY[tensor.datatype]).copy()
    except ValueError as exc:
        raise PerfError(f"{where}: bad 'b64' for '{tensor.name}': {exc}") from None


def _convert(values: Any, tensor: TensorMeta, where: str) -> np.ndarray:
    """Flatten ``values`` into the numpy representation of the tensor's datatype."""
    try:
        if tensor.datatype == "BYTES":
            flat = np.asarray(values, dtype=object).reshape(-1)
            return np.array([_to_bytes(v) for v in flat], dtype=object)
        if tensor.datatype == "BF16":
            as_f32 = np.asarray(values, dtype=np.float32).reshape(-1)
            return (as_f32.view(np.uint32) >> 16).astype(np.uint16)
        dtype = NUMPY.get(tensor.datatype)
        if dtype is None:
            raise PerfError(f"input '{tensor.name}' has unknown datatype '{tensor.datatype}'")
        return np.asarray(values, dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise PerfError(f"{where}: bad values for '{tensor.name}': {exc}") from None


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.bytes_):
        return bytes(value)
    return str(value).encode()
