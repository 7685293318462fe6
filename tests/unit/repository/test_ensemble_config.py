"""Ensemble configurations (``platform: "ensemble"``): loading and the graph's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from volley.backends import BackendInspector
from volley.errors import ConfigError
from volley.model.ensemble import EnsembleStep
from volley.repository.check import check_repository
from volley.repository.loader import LoadedConfig, load_model_config

from onnx_models import identity, make_model_dir

IO = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str], version: int = -1) -> str:
    maps = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    maps += " " + " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'{{ model_name: "{model}" model_version: {version} {maps} }}'


def _ensemble(*steps: str, io: str = IO) -> str:
    return io + "ensemble_scheduling { step [ " + ", ".join(steps) + " ] }\n"


PIPELINE = _ensemble(
    _step("pre", {"x": "IN"}, {"y": "scaled"}),
    _step("classifier", {"x": "scaled"}, {"y": "logits"}),
    _step("post", {"x": "logits"}, {"y": "OUT"}),
)


def _load(tmp_path: Path, config: str, *, model_py: str | None = None) -> LoadedConfig:
    model_dir = make_model_dir(tmp_path, "ens", config=config)
    if model_py is not None:
        (model_dir / "1" / "model.py").write_text(model_py)
    return load_model_config(model_dir, BackendInspector().read_signature)


def _error(tmp_path: Path, config: str, match: str, **kwargs: str) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as info:
        _load(tmp_path, config, **kwargs)
    return info.value


def test_pipeline_loads_without_model_files(tmp_path: Path) -> None:
    loaded = _load(tmp_path, PIPELINE)
    config, spec = loaded.config, loaded.spec
    assert (config.platform, config.backend) == ("ensemble", "")
    assert not config.instance_group
    assert spec.ensemble is not None
    steps = spec.ensemble.steps
    assert [s.model_name for s in steps] == ["pre", "classifier", "post"]
    assert steps[1] == EnsembleStep(2, "classifier", -1, (("x", "scaled"),), (("y", "logits"),))
    assert steps[1].label == "step 2 ('classifier')" and steps[1].version_str == ""
    assert loaded.versions == {1: tmp_path / "ens" / "1" / "model.py"}


def test_specific_version_and_fan_out(tmp_path: Path) -> None:
    config = _ensemble(
        _step("a", {"x": "IN"}, {"y": "left"}, version=3),
        _step("b", {"x": "IN"}, {"y": "right"}),
        _step("join", {"a": "left", "b": "right"}, {"sum": "OUT"}),
    )
    spec = _load(tmp_path, config).spec
    assert spec.ensemble is not None
    assert spec.ensemble.steps[0].version_str == "3"
    assert spec.ensemble.steps[2].reads == {"left", "right"}


def test_python_steps_need_model_py(tmp_path: Path) -> None:
    config = _ensemble(_step("python:prep", {"x": "IN"}, {"y": "OUT"}))
    error = _error(tmp_path, config, r"step 1 \('python:prep'\) calls a Python function")
    assert error.path == str(tmp_path / "ens" / "1" / "model.py")
    spec = _load(tmp_path, config, model_py="def prep(inputs): return inputs\n").spec
    assert spec.ensemble is not None
    assert spec.ensemble.functions == ("prep",)


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        (
            [_step("pre", {"x": "IN"}, {"y": "a"}), _step("post", {"x": "nowhere"}, {"y": "OUT"})],
            r"step 2 \('post'\) reads unknown tensor 'nowhere'",
        ),
        (
            [
                _step("first", {"x": "IN", "z": "c"}, {"y": "a"}),
                _step("second", {"x": "a"}, {"y": "b"}),
                _step("third", {"x": "b"}, {"y": "c", "w": "OUT"}),
            ],
            r"has a cycle: step 1 \('first'\) -> step 2 \('second'\) -> step 3 \('third'\) "
            r"-> step 1 \('first'\)",
        ),
        ([_step("pre", {"x": "IN"}, {"y": "a"})], "output 'OUT' is never produced by any step"),
        (
            [_step("pre", {"x": "IN"}, {"y": "a"}), _step("post", {"x": "IN"}, {"y": "a"})],
            r"step 2 \('post'\) produces tensor 'a', which is already produced by step 1 "
            r"\('pre'\)",
        ),
        (
            [_step("pre", {"x": "IN"}, {"y": "OUT", "z": "IN"})],
            r"produces tensor 'IN', which is already produced by the ensemble's inputs",
        ),
        ([_step("", {"x": "IN"}, {"y": "OUT"})], "step 1 has no model_name"),
        ([_step("ens", {"x": "IN"}, {"y": "OUT"})], r"step 1 \('ens'\) names the ensemble itself"),
        ([_step("pre", {}, {"y": "OUT"})], r"step 1 \('pre'\) has no input_map"),
        ([_step("pre", {"x": "IN"}, {})], r"step 1 \('pre'\) has no output_map"),
        ([_step("pre", {"x": "IN"}, {"y": "OUT"}, version=-2)], "has model_version -2"),
        ([_step("python:not-a-name", {"x": "IN"}, {"y": "OUT"})], "is not a Python function"),
        (
            [_step("pre", {"x": "OUT2"}, {"y": "OUT"}), _step("p2", {"x": "IN"}, {"y": "OUT2"})],
            None,
        ),
    ],
)
def test_graph_rules(tmp_path: Path, steps: list[str], match: str | None) -> None:
    if match is None:  # steps listed out of data-flow order are fine
        assert _load(tmp_path, _ensemble(*steps)).spec.ensemble is not None
        return
    error = _error(tmp_path, _ensemble(*steps), match)
    assert error.message.startswith("ensemble 'ens'")
    assert error.path == str(tmp_path / "ens" / "config.pbtxt")
    assert error.hint


def test_unused_ensemble_input(tmp_path: Path) -> None:
    io = IO.replace("input [", 'input [ { name: "SPARE" data_type: TYPE_FP32 dims: [ 1 ] },')
    config = _ensemble(_step("pre", {"x": "IN"}, {"y": "OUT"}), io=io)
    _error(tmp_path, config, "input 'SPARE' is not read by any step")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (IO, "has no steps"),
        (IO + "ensemble_scheduling { }", "has no steps"),
        (
            _ensemble(_step("m", {"x": "IN"}, {"y": "OUT"}), io=IO + 'backend: "onnxruntime"'),
            "no backend",
        ),
        (
            _ensemble(_step("m", {"x": "IN"}, {"y": "OUT"}), io=IO.replace("output [", "#")),
            "declares no outputs",
        ),
        (
            _ensemble(
                _step("m", {"x": "IN"}, {"y": "OUT"}), io=IO + "instance_group [ { count: 2 } ]"
            ),
            "sets instance_group",
        ),
        (
            _ensemble(
                _step("m", {"x": "IN"}, {"y": "OUT"}), io=IO + "response_cache { enable: true }"
            ),
            "sets response_cache",
        ),
        (
            _ensemble(
                _step("m", {"x": "IN"}, {"y": "OUT"}),
                io=IO.replace("TYPE_FP32 dims: [ 4 ] } ]\noutput", "TYPE_FP32 } ]\noutput"),
            ),
            "input 'IN' has no dims",
        ),
    ],
)
def test_ensemble_fields(tmp_path: Path, config: str, match: str) -> None:
    _error(tmp_path, config, match)


def test_ensemble_scheduling_needs_the_ensemble_platform(tmp_path: Path) -> None:
    model_dir = make_model_dir(
        tmp_path,
        "m",
        identity(),
        config='backend: "onnxruntime"\nensemble_scheduling { step [ { model_name: "x" } ] }',
    )
    with pytest.raises(ConfigError, match="ensemble_scheduling on a 'onnxruntime_onnx' model"):
        load_model_config(model_dir, BackendInspector().read_signature)


def test_repository_check_accepts_ensembles(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ens", config=PIPELINE)
    assert check_repository(tmp_path, BackendInspector()) == []
