"""Run a model's ``model_warmup`` samples on every instance before it is marked READY."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volley._proto.inference import model_config_pb2 as mc
from volley.backends.base import ModelInstance
from volley.errors import ConfigError
from volley.model import dtypes
from volley.model.spec import ModelSpec
from volley.model.tensors import from_raw
from volley.repository.layout import inside


def sample_inputs(
    spec: ModelSpec, sample: mc.ModelWarmup, model_dir: Path
) -> dict[str, np.ndarray]:
    """The input tensors of one warmup sample, replicated to its batch size."""
    batch = max(int(sample.batch_size), 1)
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray] = {}
    for name, item in sample.inputs.items():
        datatype = dtypes.FROM_CONFIG.get(item.data_type)
        if datatype is None:
            raise ConfigError(f"warmup '{sample.name}': input '{name}' has no valid data_type")
        dims = [int(d) for d in item.dims]
        kind = item.WhichOneof("input_data_type")
        if kind == "input_data_file":
            path = model_dir / "warmup" / item.input_data_file
            if not inside(path, model_dir / "warmup"):
                raise ConfigError(
                    f"warmup '{sample.name}': input_data_file '{item.input_data_file}' points "
                    "outside the model's warmup directory",
                    hint="put warmup data files in <model>/warmup/",
                )
            try:
                array = from_raw(datatype, dims, path.read_bytes(), name)
            except OSError as exc:
                raise ConfigError(
                    f"warmup '{sample.name}': cannot read {path}", path=str(path)
                ) from exc
        elif datatype == "BYTES":
            array = np.full(dims, b"", dtype=object)
        elif kind == "random_data":
            array = rng.random(dims).astype(dtypes.NUMPY[datatype])
        else:
            array = np.zeros(dims, dtype=dtypes.NUMPY[datatype])
        if spec.max_batch_size > 0:
            array = np.repeat(array[np.newaxis, ...], batch, axis=0)
        inputs[name] = array
    return inputs


def run_warmup(spec: ModelSpec, instances: list[ModelInstance], model_dir: Path) -> None:
    """Execute every sample ``count`` times (at least once) on every instance."""
    for sample in spec.config.model_warmup:
        inputs = sample_inputs(spec, sample, model_dir)
        for inst in instances:
            for _ in range(max(int(sample.count), 1)):
                inst.execute(inputs)
