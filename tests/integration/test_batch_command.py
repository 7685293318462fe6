"""``volley batch``: offline scoring gives what ONNX Runtime gives on the same rows, for every
input format, with ``--map``, across ``--resume``, and through a running server (``--url``)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper, numpy_helper

from volley._proto.inference import grpc_service_pb2 as pb
from volley.batchjob.sinks import JOURNAL, PartSink
from volley.cli import main

from inproc import running_server
from onnx_models import OPSET, add_constant, add_two, make_model_dir

BATCHING = 'backend: "onnxruntime"\nmax_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 500 }\n'
PLAIN = 'backend: "onnxruntime"\nmax_batch_size: 8\n'
ROWS = 300


@pytest.fixture(autouse=True)
def grpc_transport() -> None:
    """In-process jobs involve no gRPC transport: run once (TestUrl runs on each transport)."""


def lookup_model() -> onnx.ModelProto:
    """``out = [0, 10, 20, 30][idx]``: an index out of range fails at run time."""
    table = numpy_helper.from_array(np.arange(4, dtype=np.float32) * 10, "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["out"])],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1])],
        initializer=[table],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    make_model_dir(root, "m", add_constant(0.5), config=BATCHING)
    make_model_dir(root, "two", add_two(("N", 3)), config=BATCHING)
    make_model_dir(root, "scalars", add_two(("N",)), config=BATCHING)
    make_model_dir(root, "lookup", lookup_model(), config=PLAIN)
    return root


def reference(repo: Path, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What plain ONNX Runtime answers on the same rows."""
    session = ort.InferenceSession(
        str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def data(n: int = ROWS) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(n, 4)).astype(np.float32)


def write(kind: str, folder: Path, x: np.ndarray, name: str = "data") -> Path:
    """``x`` (rows of 4) as a file of ``kind`` (column ``X``), or a directory of mixed files."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{kind}"
    if kind == "parquet":
        table = pa.table({"id": np.arange(len(x)), "X": pa.array(list(x), pa.list_(pa.float32()))})
        pq.write_table(table, path, row_group_size=70)
    elif kind == "csv":
        path.write_text(
            "id,X\n" + "".join(f'{i},"{json.dumps(r.tolist())}"\n' for i, r in enumerate(x))
        )
    elif kind == "jsonl":
        path.write_text(
            "".join(json.dumps({"id": i, "X": r.tolist()}) + "\n" for i, r in enumerate(x))
        )
    elif kind == "npy":
        np.save(path, x)
    else:
        path = folder / "parts"
        write("parquet", path, x[:110], "a")
        write("jsonl", path, x[110:170], "b")
        write("csv", path, x[170:], "c")
    return path


def batch(*args: str | Path) -> list[str]:
    return ["batch", *(str(a) for a in args)]


def output_column(path: Path, name: str) -> np.ndarray:
    return np.array(pq.read_table(path).column(name).to_pylist())


@pytest.mark.parametrize("kind", ["parquet", "csv", "jsonl", "npy", "dir"])
def test_every_input_format_matches_onnxruntime(
    repo: Path, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    x = data()
    source = write(kind, tmp_path / "in", x)
    out = tmp_path / "preds.parquet"
    args = batch(
        "--model-repository",
        repo,
        "-m",
        "m",
        "--input",
        source,
        "--output",
        out,
        "--chunk-rows",
        64,
    )
    assert main(args) == 0
    table = pq.read_table(out)
    assert table.column_names == ["row", "Y"]
    assert table.column("row").to_pylist() == list(range(ROWS))
    np.testing.assert_array_equal(
        output_column(out, "Y").astype(np.float32), reference(repo, "m", {"X": x})["Y"]
    )
    assert not (tmp_path / "preds.parquet.parts").exists()
    err = capsys.readouterr().err
    progress = "300/300 rows  100.0%" if kind in ("parquet", "npy") else "300 rows  "
    assert progress in err and "rows/s" in err
    assert re.search(r"volley batch: 300 rows, 5 chunks, .* rows/s, errors: 0", err)
    assert main([*args, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "rows/s  " not in err and "volley batch: 300 rows" in err


def test_npy_columns_directory_map_and_npy_output(repo: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((50, 3), np.float32), rng.random((50, 3), np.float32)
    want = reference(repo, "two", {"a": a, "b": b})
    columns = tmp_path / "cols"
    columns.mkdir()
    np.save(columns / "a.npy", a)
    np.save(columns / "b.npy", b)
    out = tmp_path / "o.parquet"
    assert (
        main(
            batch(
                "--model-repository",
                repo,
                "-m",
                "two",
                "--input",
                columns,
                "--output",
                out,
                "--quiet",
            )
        )
        == 0
    )
    np.testing.assert_array_equal(output_column(out, "sum").astype(np.float32), want["sum"])
    np.testing.assert_array_equal(output_column(out, "diff").astype(np.float32), want["diff"])
    # --map: columns with other names (swapped on purpose: diff changes sign)
    table = pa.table(
        {
            "left": pa.array(list(a), pa.list_(pa.float32())),
            "right": pa.array(list(b), pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "lr.parquet")
    npy = tmp_path / "diff.npy"
    common = batch(
        "--model-repository",
        repo,
        "-m",
        "two",
        "--input",
        tmp_path / "lr.parquet",
        "--output",
        npy,
        "--quiet",
    )
    assert main([*common, "--map", "left=b", "--map", "right=a"]) == 1
    assert main([*common, "--map", "left=b", "--map", "right=a", "--output-name", "diff"]) == 0
    np.testing.assert_array_equal(np.load(npy), -want["diff"])


def test_scalar_columns_feed_row_inputs(repo: Path, tmp_path: Path) -> None:
    p, q = np.arange(40, dtype=np.float32), np.arange(40, dtype=np.float32) / 3
    (tmp_path / "s.csv").write_text(
        "p,q\n" + "".join(f"{x!r},{y!r}\n" for x, y in zip(p.tolist(), q.tolist(), strict=True))
    )
    out = tmp_path / "s.parquet"
    args = batch(
        "--model-repository",
        repo,
        "-m",
        "scalars",
        "--input",
        tmp_path / "s.csv",
        "--output",
        out,
        "--map",
        "p=a",
        "--map",
        "q=b",
        "--quiet",
    )
    assert main(args) == 0
    want = reference(repo, "scalars", {"a": p, "b": q})
    np.testing.assert_array_equal(
        output_column(out, "sum").astype(np.float32), want["sum"].reshape(-1, 1)
    )


def test_resume_after_a_corrupt_row(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    x = data(200)
    source = write("jsonl", tmp_path, x)
    good = source.read_text()
    lines = good.splitlines(keepends=True)
    lines[149] = '{"id": 149, "X": [1, 2, "oops", 4]}\n'
    source.write_text("".join(lines))
    out = tmp_path / "preds.parquet"
    args = batch(
        "--model-repository",
        repo,
        "-m",
        "m",
        "--input",
        source,
        "--output",
        out,
        "--chunk-rows",
        32,
        "--quiet",
    )
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{source}: line 150: 'oops' is not a number" in err
    assert not out.exists()
    parts = out.with_name("preds.parquet.parts")
    journal = [json.loads(line) for line in (parts / JOURNAL).read_text().splitlines()[1:]]
    assert sorted(r["chunk"] for r in journal) == [0, 1, 2, 3]
    want = reference(repo, "m", {"X": x})["Y"]
    for record in journal:
        part = pq.read_table(parts / record["part"])
        rows = part.column("row").to_pylist()
        assert rows == list(range(record["first_row"], record["first_row"] + 32))
        np.testing.assert_array_equal(
            np.array(part.column("Y").to_pylist(), np.float32), want[rows]
        )
    # without --resume the parts are not touched
    assert main(args) == 1
    assert "pass --resume" in capsys.readouterr().err
    source.write_text(good)
    written: list[int] = []
    original = PartSink.write

    def spy(self: PartSink, chunk: object, results: object) -> None:
        written.append(chunk.index)  # type: ignore[attr-defined]
        original(self, chunk, results)  # type: ignore[arg-type]

    monkeypatch.setattr(PartSink, "write", spy)
    assert main([*args, "--resume"]) == 0
    assert sorted(written) == [4, 5, 6]
    assert "200 rows (128 rows in 4 chunks already done), 7 chunks" in capsys.readouterr().err
    np.testing.assert_array_equal(output_column(out, "Y").astype(np.float32), want)
    assert pq.read_table(out).column("row").to_pylist() == list(range(200))
    assert not parts.exists()


def test_resume_refuses_other_arguments(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write("npy", tmp_path, data(40))
    out = tmp_path / "preds.parquet"
    out.with_name("preds.parquet.parts").mkdir()
    (out.with_name("preds.parquet.parts") / JOURNAL).write_text(
        json.dumps({"volley_batch": 1, "fingerprint": {"model": "m"}}) + "\n"
    )
    assert (
        main(
            batch(
                "--model-repository",
                repo,
                "-m",
                "m",
                "--input",
                source,
                "--output",
                out,
                "--resume",
            )
        )
        == 1
    )
    assert "different job" in capsys.readouterr().err


def test_corrupt_file_exits_1_naming_it(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write("parquet", tmp_path, data(100))
    source.write_bytes(source.read_bytes()[:400])
    out = tmp_path / "preds.parquet"
    assert (
        main(batch("--model-repository", repo, "-m", "m", "--input", source, "--output", out)) == 1
    )
    err = capsys.readouterr().err
    assert f"volley batch: {source}: not a readable Parquet file" in err
    assert not out.exists() and not out.with_name("preds.parquet.parts").exists()


def lookup_input(tmp_path: Path) -> tuple[Path, np.ndarray]:
    idx = (np.arange(40) % 4).reshape(40, 1).astype(np.int64)
    bad = idx.copy()
    bad[21] = 99
    np.save(tmp_path / "idx.npy", bad)
    return tmp_path / "idx.npy", idx


def test_failed_inference_names_the_rows_and_resume_redoes_them(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, idx = lookup_input(tmp_path)
    out = tmp_path / "preds.npy"
    args = batch(
        "--model-repository",
        repo,
        "-m",
        "lookup",
        "--input",
        source,
        "--output",
        out,
        "--batch-rows",
        4,
        "--chunk-rows",
        8,
        "--concurrency",
        1,
        "--quiet",
    )
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "inference failed for rows 20-23 (chunk 2): INTERNAL: " in err and "errors: 1" in err
    np.save(source, idx)
    assert main([*args, "--resume"]) == 0
    np.testing.assert_array_equal(np.load(out), idx.astype(np.float32) * 10)


def test_bad_arguments(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write("npy", tmp_path, data(10))
    common = batch("-m", "m", "--input", source, "--output", tmp_path / "o.parquet")
    assert main(common) == 1
    assert "--model-repository" in capsys.readouterr().err
    local = [*common, "--model-repository", str(repo)]
    assert main([*local, "--batch-rows", "9"]) == 1
    assert "max_batch_size 8" in capsys.readouterr().err
    assert main([*local, "--map", "oops"]) == 2
    assert "COLUMN=INPUT" in capsys.readouterr().err
    assert main([*local, "-m", "nope"]) == 1
    assert "nope" in capsys.readouterr().err


class TestUrl:
    """Against a running server, on each gRPC transport."""

    @pytest.fixture(autouse=True, params=("native", "grpcio"))
    def grpc_transport(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> str:
        monkeypatch.setenv("VOLLEY_GRPC_TRANSPORT", str(request.param))
        return str(request.param)

    async def test_url_gives_the_same_results(self, repo: Path, tmp_path: Path) -> None:
        x = data()
        source = write("parquet", tmp_path, x)
        out = tmp_path / "preds.parquet"
        async with running_server(repo) as (server, stub, _):
            args = batch(
                "--url",
                f"127.0.0.1:{server.port}",
                "-m",
                "m",
                "--input",
                source,
                "--output",
                out,
                "--chunk-rows",
                64,
                "--quiet",
            )
            assert await asyncio.to_thread(main, args) == 0
            stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="m"))
        np.testing.assert_array_equal(
            output_column(out, "Y").astype(np.float32), reference(repo, "m", {"X": x})["Y"]
        )
        assert stats.model_stats[0].inference_count == ROWS

    async def test_url_failure_carries_the_server_message(
        self, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source, _ = lookup_input(tmp_path)
        async with running_server(repo) as (server, _, _):
            args = batch(
                "--url",
                f"127.0.0.1:{server.port}",
                "-m",
                "lookup",
                "--input",
                source,
                "--output",
                tmp_path / "o.npy",
                "--batch-rows",
                4,
                "--concurrency",
                1,
                "--quiet",
            )
            assert await asyncio.to_thread(main, args) == 1
        err = capsys.readouterr().err
        assert "inference failed for rows 20-23 (chunk 0): INTERNAL: " in err
