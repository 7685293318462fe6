"""sequence_batching configurations: controls, state, strategies, and what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from sequence_models import accumulator, accumulator_config

from volley._proto.inference import model_config_pb2 as mc
from volley.backends import BackendInspector
from volley.errors import ConfigError
from volley.model.sequence import SequenceSpec
from volley.repository.loader import load_model_config

from onnx_models import make_model_dir


def spec_of(text: str) -> SequenceSpec:
    config = text_format.Parse(text, mc.ModelConfig())
    return SequenceSpec.from_config(config)


def test_controls_state_and_direct() -> None:
    spec = spec_of(accumulator_config(idle_us=250_000))
    assert spec.max_idle_ns == 250_000_000
    assert spec.strategy == "direct"
    assert {c.kind for c in spec.controls} == {"start", "ready", "corrid"}
    assert spec.server_inputs == {"START", "READY", "CORRID", "ACC_IN"}
    assert spec.state_outputs == {"ACC_OUT"}
    start = next(c for c in spec.controls if c.kind == "start")
    assert start.tensor([True, False], batched=True).tolist() == [[1], [0]]
    assert start.tensor([True], batched=False).dtype == np.int32
    corrid = next(c for c in spec.controls if c.kind == "corrid")
    assert corrid.tensor([7, 7], batched=True).dtype == np.uint64
    (state,) = spec.states
    assert state.initial(3, batched=True).shape == (3, 1)


def test_oldest_and_defaults() -> None:
    spec = spec_of(
        "sequence_batching { oldest { max_candidate_sequences: 3 preferred_batch_size: [4, 2] "
        "max_queue_delay_microseconds: 100 } }"
    )
    assert spec.strategy == "oldest" and spec.max_candidates == 3
    assert spec.preferred_batch_sizes == (2, 4) and spec.max_queue_delay_ns == 100_000
    assert spec.max_idle_ns == 1_000_000_000  # Triton's default idle time


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('control_input [ { name: "S" } ]', "exactly one control"),
        (
            'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START } ] } ]',
            "exactly one of int32_false_true",
        ),
        (
            'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START '
            "int32_false_true: [0, 1] fp32_false_true: [0, 1] } ] } ]",
            "exactly one of",
        ),
        (
            'control_input [ { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID '
            "data_type: TYPE_FP32 } ] } ]",
            "TYPE_UINT64",
        ),
        (
            'control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_END '
            'int32_false_true: [0, 1] } ] }, { name: "B" control [ { kind: '
            "CONTROL_SEQUENCE_END int32_false_true: [0, 1] } ] } ]",
            "two END controls",
        ),
        (
            'state [ { input_name: "I" output_name: "O" data_type: TYPE_STRING dims: [1] } ]',
            "numeric",
        ),
        ('state [ { input_name: "I" output_name: "O" data_type: TYPE_FP32 dims: [-1] } ]', "fixed"),
        (
            'state [ { input_name: "I" output_name: "O" data_type: TYPE_FP32 dims: [1] '
            'initial_state { data_type: TYPE_FP32 dims: [1] data_file: "x" } } ]',
            "data_file",
        ),
    ],
)
def test_bad_sequence_configs(body: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        spec_of(f"sequence_batching {{ {body} }}")


def test_the_loader_leaves_control_and_state_tensors_to_the_server(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "acc", accumulator(), config=accumulator_config())
    loaded = load_model_config(tmp_path / "acc", BackendInspector().read_signature)
    assert [t.name for t in loaded.spec.inputs] == ["INPUT"]
    assert [t.name for t in loaded.spec.outputs] == ["OUTPUT", "CORR_OUT"]
    assert loaded.spec.sequence is not None

    broken = accumulator_config().replace('name: "READY"', 'name: "NOT_THERE"')
    make_model_dir(tmp_path, "bad", accumulator(), config=broken)
    with pytest.raises(ConfigError, match="'NOT_THERE', which the model does not have"):
        load_model_config(tmp_path / "bad", BackendInspector().read_signature)
