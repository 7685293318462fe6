"""Auto-complete from ONNX files and the effective configuration the loader builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from volley._proto.inference import model_config_pb2 as mc
from volley.backends import BackendInspector
from volley.backends.onnx_signature import read_onnx_io
from volley.errors import ConfigError
from volley.repository.loader import LoadedConfig, load_model_config

from onnx_models import add_two, identity, make_model_dir, with_default_input

INSPECTOR = BackendInspector()


def _load(
    tmp_path: Path,
    model: onnx.ModelProto | bytes | None,
    config: str | None = None,
    *,
    gpu_count: int = 0,
    default_max_batch_size: int = 4,
    auto_complete: bool = True,
) -> LoadedConfig:
    model_dir = make_model_dir(tmp_path, "m", model, config=config)
    return load_model_config(
        model_dir,
        INSPECTOR.read_signature,
        gpu_count=gpu_count,
        default_max_batch_size=default_max_batch_size,
        auto_complete=auto_complete,
    )


def _dims(tensor: mc.ModelInput | mc.ModelOutput) -> list[int]:
    return [int(d) for d in tensor.dims]


def test_batching_model_gets_default_max_batch_size(tmp_path: Path) -> None:
    loaded = _load(tmp_path, add_two(("N", 3), elem=TensorProto.INT64))
    config = loaded.config
    assert config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert [(t.name, t.data_type, _dims(t)) for t in config.input] == [
        ("a", mc.TYPE_INT64, [3]),
        ("b", mc.TYPE_INT64, [3]),
    ]
    assert [(t.name, _dims(t)) for t in config.output] == [("sum", [3]), ("diff", [3])]
    assert loaded.spec.batching is not None
    assert loaded.spec.inputs[0].full_shape(config.max_batch_size) == [-1, 3]


def test_default_max_batch_size_is_configurable(tmp_path: Path) -> None:
    assert _load(tmp_path, identity(), default_max_batch_size=16).config.max_batch_size == 16


def test_max_batch_size_one_adds_no_dynamic_batching(tmp_path: Path) -> None:
    config = _load(tmp_path, identity(), default_max_batch_size=1).config
    assert config.max_batch_size == 1
    assert not config.HasField("dynamic_batching")


def test_given_max_batch_size_is_kept(tmp_path: Path) -> None:
    config = _load(tmp_path, identity(), "max_batch_size: 32").config
    assert config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [32]


def test_non_batching_model_keeps_full_dims(tmp_path: Path) -> None:
    loaded = _load(tmp_path, identity(in_shape=(2, 4), out_shape=(2, 4)))
    config = loaded.config
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert _dims(config.input[0]) == [2, 4]
    assert _dims(config.output[0]) == [2, 4]
    assert loaded.spec.batching is None


def test_one_fixed_first_dim_prevents_batching(tmp_path: Path) -> None:
    config = _load(tmp_path, identity(in_shape=("N", 4), out_shape=(1, 4))).config
    assert config.max_batch_size == 0
    assert _dims(config.input[0]) == [-1, 4]


def test_max_batch_size_on_non_batchable_model_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not support batching") as info:
        _load(tmp_path, identity(in_shape=(2, 4), out_shape=(2, 4)), "max_batch_size: 8")
    assert info.value.path == str(tmp_path / "m" / "config.pbtxt")
    assert "max_batch_size: 0" in info.value.hint


def test_max_batch_size_on_non_batchable_model_with_full_io_is_an_error(tmp_path: Path) -> None:
    config = """
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
    """
    with pytest.raises(ConfigError, match="fixed first dimension"):
        _load(tmp_path, identity(in_shape=(2, 4), out_shape=(2, 4)), config)


def test_datatype_mismatch_is_an_error(tmp_path: Path) -> None:
    config = """
    input [ { name: "x" data_type: TYPE_INT32 dims: [ 4 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
    max_batch_size: 2
    """
    with pytest.raises(ConfigError, match="TYPE_INT32 for input 'x', model provides TYPE_FP32"):
        _load(tmp_path, identity(), config)


def test_output_name_mismatch_is_an_error(tmp_path: Path) -> None:
    config = 'output [ { name: "out" data_type: TYPE_FP32 dims: [ 4 ] } ]'
    with pytest.raises(ConfigError, match="'out' is not among the model's outputs") as info:
        _load(tmp_path, identity(), config)
    assert "y" in info.value.message


def test_input_name_mismatch_is_an_error(tmp_path: Path) -> None:
    config = 'input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]'
    with pytest.raises(ConfigError, match="'input' is not among the model's inputs"):
        _load(tmp_path, identity(), config)


def test_missing_model_input_is_an_error(tmp_path: Path) -> None:
    config = """
    max_batch_size: 2
    input [ { name: "a" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "sum" data_type: TYPE_FP32 dims: [ 3 ] } ]
    """
    with pytest.raises(ConfigError, match="lacks model input"):
        _load(tmp_path, add_two(), config)


def test_config_dims_may_be_stricter_than_the_model(tmp_path: Path) -> None:
    config = """
    max_batch_size: 2
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 7 ] } ]
    """
    loaded = _load(tmp_path, identity(in_shape=("N", "D"), out_shape=("N", "D")), config)
    assert _dims(loaded.config.input[0]) == [7]
    assert _dims(loaded.config.output[0]) == [-1]


def test_config_dims_conflicting_with_model_are_an_error(tmp_path: Path) -> None:
    config = """
    max_batch_size: 2
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 5 ] } ]
    """
    with pytest.raises(ConfigError, match=r"expects shape \[-1, 4\]"):
        _load(tmp_path, identity(), config)


def test_config_with_full_io_is_not_completed(tmp_path: Path) -> None:
    config = """
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
    """
    loaded = _load(tmp_path, identity(), config)
    assert loaded.config.max_batch_size == 8
    assert not loaded.config.HasField("dynamic_batching")


def test_only_outputs_missing_are_filled(tmp_path: Path) -> None:
    config = 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]'
    config_ = _load(tmp_path, identity(), config).config
    assert config_.max_batch_size == 4
    assert [(t.name, _dims(t)) for t in config_.output] == [("y", [4])]


def test_auto_complete_disabled_checks_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lacks model input"):
        _load(tmp_path, identity(), 'backend: "onnxruntime"', auto_complete=False)


def test_auto_complete_disabled_accepts_full_config(tmp_path: Path) -> None:
    config = """
    input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
    """
    loaded = _load(tmp_path, identity(), config, auto_complete=False)
    assert loaded.config.max_batch_size == 0


def test_batch_only_tensor_gets_dims_one_with_empty_reshape(tmp_path: Path) -> None:
    config = _load(tmp_path, identity(in_shape=("N",), out_shape=("N",))).config
    tensor = config.input[0]
    assert _dims(tensor) == [1]
    assert tensor.HasField("reshape")
    assert list(tensor.reshape.shape) == []


def test_overridable_initializer_may_be_an_optional_input(tmp_path: Path) -> None:
    config = """
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] },
            { name: "bias" data_type: TYPE_FP32 dims: [ 2 ] optional: true } ]
    """
    loaded = _load(tmp_path, with_default_input(), config)
    assert loaded.spec.required_inputs == 1
    assert loaded.config.output[0].name == "y"


def test_autocomplete_skips_initializer_inputs(tmp_path: Path) -> None:
    config = _load(tmp_path, with_default_input()).config
    assert [t.name for t in config.input] == ["x"]


def test_required_input_marked_optional_is_an_error(tmp_path: Path) -> None:
    config = 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] optional: true } ]'
    with pytest.raises(ConfigError, match="requires it"):
        _load(tmp_path, with_default_input(), config)


def test_normalization_defaults_in_effective_config(tmp_path: Path) -> None:
    config = _load(tmp_path, identity()).config
    assert config.name == "m"
    assert (config.platform, config.backend) == ("onnxruntime_onnx", "onnxruntime")
    assert config.default_model_filename == "model.onnx"
    assert config.version_policy.latest.num_versions == 1
    assert config.optimization.input_pinned_memory.enable
    assert config.optimization.output_pinned_memory.enable
    (group,) = config.instance_group
    assert (group.name, group.kind, group.count) == ("m", group.KIND_CPU, 2)


def test_gpu_machine_resolves_kind_auto(tmp_path: Path) -> None:
    loaded = _load(tmp_path, identity(), gpu_count=1)
    (group,) = loaded.config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (group.KIND_GPU, 1, [0])
    assert (loaded.spec.instance_kind, loaded.spec.gpus) == ("GPU", (0,))


def test_parameters_pass_through(tmp_path: Path) -> None:
    config = """
    parameters { key: "intra_op_thread_count" value: { string_value: "3" } }
    parameters [ { key: "enable_mem_arena" value: { string_value: "0" } } ]
    optimization { graph { level: 1 } }
    """
    loaded = _load(tmp_path, identity(), config)
    assert loaded.config.parameters["intra_op_thread_count"].string_value == "3"
    assert loaded.spec.parameters == {"intra_op_thread_count": "3", "enable_mem_arena": "0"}
    assert loaded.spec.graph_level == 1


def test_yaml_config_through_loader(tmp_path: Path) -> None:
    model_dir = make_model_dir(
        tmp_path,
        "m",
        identity(),
        config="max_batch_size: 2\nparameters: {k: {string_value: v}}\n",
        config_name="config.yaml",
    )
    loaded = load_model_config(model_dir, INSPECTOR.read_signature)
    assert loaded.config.max_batch_size == 2
    assert loaded.spec.parameters == {"k": "v"}


def test_reads_newest_selected_version(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m", identity(in_shape=(1, 2), out_shape=(1, 2)))
    make_model_dir(tmp_path, "m", add_two(), versions=[2])
    loaded = load_model_config(model_dir, INSPECTOR.read_signature)
    assert [t.name for t in loaded.config.input] == ["a", "b"]
    assert list(loaded.versions) == [2]


def test_external_data_is_not_loaded(tmp_path: Path) -> None:
    bias = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), name="w")
    model = identity(in_shape=("N", 64), out_shape=("N", 64))
    model.graph.initializer.append(bias)
    target_dir = tmp_path / "m" / "1" / "model.onnx"
    target_dir.mkdir(parents=True)
    onnx.save(
        model,
        str(target_dir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    (target_dir / "weights.bin").unlink()
    io = read_onnx_io(target_dir / "model.onnx")
    assert [t.name for t in io.inputs] == ["x"]
    assert io.can_batch()


def test_unsupported_element_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COMPLEX64"):
        _load(tmp_path, identity(elem=TensorProto.COMPLEX64))


def test_corrupt_onnx_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read ONNX model") as info:
        _load(tmp_path, b"this is not protobuf \xff\xfe", 'backend: "onnxruntime"')
    assert info.value.path == str(tmp_path / "m" / "1" / "model.onnx")


def test_model_without_shape_info_needs_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no shape information"):
        _load(tmp_path, identity(in_shape=("N", 4), out_shape=None))


# --- TensorRT ----------------------------------------------------------------------------

TRT_IO = """
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP16 dims: [ 3 ] } ]
output [ { name: "y" data_type: TYPE_FP16 dims: [ 3 ] } ]
"""


def _trt(tmp_path: Path, config: str, gpu_count: int = 1) -> LoadedConfig:
    model_dir = make_model_dir(tmp_path, "t", b"engine", config=config, filename="model.plan")
    return load_model_config(model_dir, INSPECTOR.read_signature, gpu_count=gpu_count)


def test_tensorrt_needs_inputs_and_outputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TensorRT model needs its inputs and outputs") as info:
        _trt(tmp_path, "max_batch_size: 8")
    assert "config.pbtxt" in info.value.hint
    assert info.value.path == str(tmp_path / "t" / "config.pbtxt")


def test_tensorrt_with_io_on_gpu(tmp_path: Path) -> None:
    loaded = _trt(tmp_path, TRT_IO)
    assert (loaded.config.platform, loaded.config.backend) == ("tensorrt_plan", "tensorrt")
    assert loaded.config.HasField("dynamic_batching")
    assert loaded.versions == {1: tmp_path / "t" / "1" / "model.plan"}
    assert loaded.config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


def test_tensorrt_without_gpu(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TensorRT backend supports only GPU device"):
        _trt(tmp_path, TRT_IO, gpu_count=0)
