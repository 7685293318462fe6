"""Warmup samples: the inputs each sample builds, and how often each instance runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from volley._proto.inference import model_config_pb2 as mc
from volley.backends.base import ModelInstance
from volley.backends.warmup import run_warmup, sample_inputs
from volley.errors import ConfigError, InvalidArgument
from volley.model.spec import ModelSpec
from volley.serving.lifecycle import ModelManager
from volley.serving.registry import ModelState, Registry

from onnx_models import identity, make_model_dir

BASE = """
name: "w"
backend: "onnxruntime"
platform: "onnxruntime_onnx"
max_batch_size: %d
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] },
        { name: "ids" data_type: TYPE_INT32 dims: [ 2 ] },
        { name: "s" data_type: TYPE_STRING dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def make_spec(warmup: str, max_batch_size: int = 4) -> ModelSpec:
    config = text_format.Parse(BASE % max_batch_size + warmup, mc.ModelConfig())
    return ModelSpec.from_config(config)


def only_sample(spec: ModelSpec) -> mc.ModelWarmup:
    (sample,) = spec.config.model_warmup
    return sample


class RecordingInstance(ModelInstance):
    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(inputs)
        return {}


def test_zero_data(tmp_path: Path) -> None:
    spec = make_spec(
        """model_warmup [ { name: "z" batch_size: 1 inputs [
            { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } },
            { key: "ids" value: { data_type: TYPE_INT32 dims: [ 2 ] zero_data: true } } ] } ]"""
    )
    inputs = sample_inputs(spec, only_sample(spec), tmp_path)
    assert sorted(inputs) == ["ids", "x"]
    assert inputs["x"].dtype == np.float32
    assert inputs["ids"].dtype == np.int32
    np.testing.assert_array_equal(inputs["x"], np.zeros((1, 3), np.float32))
    np.testing.assert_array_equal(inputs["ids"], np.zeros((1, 2), np.int32))


def test_random_data_is_deterministic_and_in_range(tmp_path: Path) -> None:
    spec = make_spec(
        """model_warmup [ { name: "r" batch_size: 2 inputs [
            { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] random_data: true } } ] } ]"""
    )
    first = sample_inputs(spec, only_sample(spec), tmp_path)["x"]
    second = sample_inputs(spec, only_sample(spec), tmp_path)["x"]
    assert first.shape == (2, 3)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert ((first >= 0) & (first < 1)).all()
    assert np.count_nonzero(first[0]) > 0
    # Replicated: every batch row is the same sample.
    np.testing.assert_array_equal(first[0], first[1])


def test_input_data_file(tmp_path: Path) -> None:
    (tmp_path / "warmup").mkdir()
    values = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    (tmp_path / "warmup" / "x.bin").write_bytes(values.tobytes())
    spec = make_spec(
        """model_warmup [ { name: "f" batch_size: 3 inputs [
            { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] input_data_file: "x.bin" } } ] } ]"""
    )
    x = sample_inputs(spec, only_sample(spec), tmp_path)["x"]
    np.testing.assert_array_equal(x, np.stack([values] * 3))


def test_bytes_input_from_file_and_default(tmp_path: Path) -> None:
    (tmp_path / "warmup").mkdir()
    framed = b"".join(len(s).to_bytes(4, "little") + s for s in (b"ab", b"xyz"))
    (tmp_path / "warmup" / "s.bin").write_bytes(framed)
    spec = make_spec(
        """model_warmup [ { name: "b" batch_size: 1 inputs [
            { key: "s" value: { data_type: TYPE_STRING dims: [ 2 ] input_data_file: "s.bin" } } ] },
          { name: "z" batch_size: 1 inputs [
            { key: "s" value: { data_type: TYPE_STRING dims: [ 2 ] random_data: true } } ] } ]"""
    )
    from_file, default = spec.config.model_warmup
    s = sample_inputs(spec, from_file, tmp_path)["s"]
    assert s.dtype == object
    assert s.tolist() == [[b"ab", b"xyz"]]
    empty = sample_inputs(spec, default, tmp_path)["s"]
    assert empty.dtype == object
    assert empty.tolist() == [[b"", b""]]


def test_batch_size_replication_only_for_batching_models(tmp_path: Path) -> None:
    warmup = """model_warmup [ { name: "z" batch_size: 4 inputs [
        { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } ] } ]"""
    batching = make_spec(warmup, max_batch_size=8)
    plain = make_spec(warmup, max_batch_size=0)
    assert sample_inputs(batching, only_sample(batching), tmp_path)["x"].shape == (4, 3)
    assert sample_inputs(plain, only_sample(plain), tmp_path)["x"].shape == (3,)


def test_batch_size_zero_counts_as_one(tmp_path: Path) -> None:
    spec = make_spec(
        """model_warmup [ { name: "z" inputs [
            { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } ] } ]"""
    )
    assert sample_inputs(spec, only_sample(spec), tmp_path)["x"].shape == (1, 3)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    spec = make_spec(
        """model_warmup [ { name: "missing" batch_size: 1 inputs [
            { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] input_data_file: "nope.bin" } } ] } ]"""
    )
    with pytest.raises(ConfigError, match="warmup 'missing': cannot read") as info:
        sample_inputs(spec, only_sample(spec), tmp_path)
    assert info.value.path == str(tmp_path / "warmup" / "nope.bin")


def test_file_of_the_wrong_size_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "warmup").mkdir()
    (tmp_path / "warmup" / "short.bin").write_bytes(b"\x00" * 5)
    spec = make_spec(
        """model_warmup [ { name: "short" batch_size: 1 inputs [
            { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] input_data_file: "short.bin" } } ] } ]"""
    )
    with pytest.raises(InvalidArgument, match="byte size mismatch"):
        sample_inputs(spec, only_sample(spec), tmp_path)


def test_invalid_data_type(tmp_path: Path) -> None:
    spec = make_spec(
        """model_warmup [ { name: "bad" batch_size: 1 inputs [
            { key: "x" value: { data_type: TYPE_INVALID dims: [ 3 ] zero_data: true } } ] } ]"""
    )
    with pytest.raises(ConfigError, match="input 'x' has no valid data_type"):
        sample_inputs(spec, only_sample(spec), tmp_path)


def test_run_warmup_executes_every_sample_count_times_on_every_instance(tmp_path: Path) -> None:
    spec = make_spec(
        """model_warmup [
          { name: "a" batch_size: 2 count: 3 inputs [
            { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } ] },
          { name: "b" batch_size: 1 inputs [
            { key: "ids" value: { data_type: TYPE_INT32 dims: [ 2 ] zero_data: true } } ] } ]"""
    )
    instances = [RecordingInstance(), RecordingInstance()]
    run_warmup(spec, list(instances), tmp_path)
    for inst in instances:
        assert [sorted(call) for call in inst.calls] == [["x"]] * 3 + [["ids"]]
        assert [next(iter(call.values())).shape for call in inst.calls] == [(2, 3)] * 3 + [(1, 2)]


def test_run_warmup_without_samples_runs_nothing(tmp_path: Path) -> None:
    inst = RecordingInstance()
    run_warmup(make_spec(""), [inst], tmp_path)
    assert inst.calls == []


WARM_IDENTITY = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
model_warmup [ { name: "w" batch_size: 2 inputs [
  { key: "x" value: { data_type: TYPE_FP32 dims: [ 4 ] %s } } ] } ]
"""


async def test_model_loads_after_warmup(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity(), config=WARM_IDENTITY % "random_data: true")
    registry = Registry()
    manager = ModelManager([tmp_path], registry)
    try:
        await manager.load("ident")
        assert registry.resolve("ident", "1").state is ModelState.READY
    finally:
        await manager.shutdown()


async def test_model_with_missing_warmup_file_fails_to_load(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity(), config=WARM_IDENTITY % 'input_data_file: "gone"')
    registry = Registry()
    manager = ModelManager([tmp_path], registry)
    with pytest.raises(ConfigError, match="cannot read"):
        await manager.load("ident")
    entry = registry.get("ident")
    assert entry is not None and entry.default is None
    assert "cannot read" in entry.versions[1].reason
