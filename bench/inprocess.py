"""In-process ONNX Runtime throughput of a model: the ceiling a server is compared with."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from volley_perf.inputs import InputOptions, prepare_inputs
from volley_perf.target import ModelInfo, TensorInfo

from volley._proto.inference import model_config_pb2 as mc
from volley.model.dtypes import FROM_ORT, NUMPY


def read_config(model_dir: Path) -> mc.ModelConfig:
    """The model's ``config.pbtxt`` (empty config if there is none)."""
    config = mc.ModelConfig()
    path = model_dir / "config.pbtxt"
    if path.is_file():
        text_format.Parse(path.read_text(), config)
    return config


def measure(
    model_dir: Path, batch_size: int, seed: int, seconds: float, version: str = "1"
) -> dict[str, object]:
    """Run the model back to back for ``seconds`` on the inputs ``volley perf`` would send.

    The session gets the intra/inter-op thread counts of the model's config parameters.
    """
    config = read_config(model_dir)
    params = {k: v.string_value for k, v in config.parameters.items()}
    options = ort.SessionOptions()
    intra = int(params.get("intra_op_thread_count", "0"))
    inter = int(params.get("inter_op_thread_count", "0"))
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    session = ort.InferenceSession(
        str(model_dir / version / "model.onnx"), sess_options=options,
        providers=["CPUExecutionProvider"],
    )  # fmt: skip
    batching = config.max_batch_size > 0
    info = ModelInfo(
        name=model_dir.name,
        version="",
        inputs=tuple(
            TensorInfo(
                i.name,
                FROM_ORT[i.type],
                tuple(d if isinstance(d, int) else -1 for d in i.shape),
            )
            for i in session.get_inputs()
        ),
        outputs=(),
        max_batch_size=config.max_batch_size if batching else 0,
    )
    (tensors,) = prepare_inputs(info, InputOptions(seed=seed, batch_size=batch_size)).requests
    feeds = {
        t.name: np.frombuffer(t.raw, dtype=NUMPY[t.datatype]).reshape(t.shape) for t in tensors
    }
    for _ in range(50):
        session.run(None, feeds)
    runs = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        session.run(None, feeds)
        runs += 1
        if runs % 64 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    return {
        "inferences_per_s": runs * batch_size / elapsed,
        "runs": runs,
        "seconds": elapsed,
        "batch_size": batch_size,
        "intra_op_threads": intra,
        "inter_op_threads": inter,
    }
