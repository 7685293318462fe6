"""``check_repository``: every problem of a repository in one run, each with file and hint."""

from __future__ import annotations

from pathlib import Path

from volley.backends import BackendInspector
from volley.repository.check import Problem, check_repository, format_problems

from onnx_models import add_two, identity, make_model_dir, unknown_op

INSPECTOR = BackendInspector()


def test_good_repository_has_no_problems(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "ident", identity())
    make_model_dir(tmp_path, "adder", add_two(), config="max_batch_size: 8", versions=[1, 2])
    make_model_dir(tmp_path, ".ignored", b"junk")
    assert check_repository(tmp_path, INSPECTOR) == []


def test_collects_every_problem(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "good", identity())
    make_model_dir(tmp_path, "bad_syntax", identity(), config="max_batch_size: [")
    make_model_dir(tmp_path, "wrong_name", identity(), config='name: "other"')
    make_model_dir(tmp_path, "no_file", config='backend: "onnxruntime"')
    make_model_dir(tmp_path, "bad_type", identity(), config=_io("TYPE_INT8"))
    make_model_dir(tmp_path, "corrupt", b"\xff\xfe not onnx")
    make_model_dir(tmp_path, "ort_fails", unknown_op())
    problems = check_repository(tmp_path, INSPECTOR)
    by_model = {p.model: p for p in problems}
    assert sorted(by_model) == [
        "bad_syntax",
        "bad_type",
        "corrupt",
        "no_file",
        "ort_fails",
        "wrong_name",
    ]
    assert len(problems) == 6
    config = "config.pbtxt"
    assert by_model["bad_syntax"].path == str(tmp_path / "bad_syntax" / config)
    assert by_model["wrong_name"].path == str(tmp_path / "wrong_name" / config)
    assert by_model["no_file"].path == str(tmp_path / "no_file" / "1" / "model.onnx")
    assert by_model["bad_type"].path == str(tmp_path / "bad_type" / config)
    assert by_model["corrupt"].path == str(tmp_path / "corrupt" / "1" / "model.onnx")
    assert by_model["ort_fails"].path == str(tmp_path / "ort_fails" / "1" / "model.onnx")
    assert "NoSuchOperator" in by_model["ort_fails"].message
    assert "TYPE_INT8" in by_model["bad_type"].message
    for problem in problems:
        assert problem.message
        assert problem.hint


def test_every_selected_version_is_opened(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "m", identity(), config="version_policy { all { } }")
    make_model_dir(tmp_path, "m", unknown_op(), versions=[2])
    # Version 2 is the newest, so auto-complete reads its (well-formed) ONNX signature.
    (problem,) = check_repository(tmp_path, INSPECTOR)
    assert problem.path == str(model_dir / "2" / "model.onnx")
    assert "version 2" in problem.message


def test_missing_repository_is_a_problem(tmp_path: Path) -> None:
    (problem,) = check_repository(tmp_path / "absent", INSPECTOR)
    assert problem.path == str(tmp_path / "absent")
    assert problem.model == ""
    assert problem.hint


def test_gpu_count_is_passed_on(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "m", identity(), config="instance_group [ { kind: KIND_GPU } ]")
    (problem,) = check_repository(tmp_path, INSPECTOR)
    assert "no GPUs are available" in problem.message
    assert check_repository(tmp_path, INSPECTOR, gpu_count=1) == []


def test_format_problems() -> None:
    problems = [
        Problem(model="a", path="/r/a/config.pbtxt", message="bad thing", hint="fix it"),
        Problem(model="b", path="/r/b", message="other thing", hint="do that"),
    ]
    assert format_problems(problems) == (
        "/r/a/config.pbtxt: bad thing\n  hint: fix it\n/r/b: other thing\n  hint: do that"
    )
    assert format_problems([]) == ""


def _io(data_type: str) -> str:
    return f"""
    input [ {{ name: "x" data_type: {data_type} dims: [ 4 ] }} ]
    output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
    max_batch_size: 2
    """
