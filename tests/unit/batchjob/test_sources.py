"""Input readers, column-to-input mapping, value conversion and chunking of ``volley batch``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from volley.batchjob.chunks import chunked
from volley.batchjob.convert import RowError, from_values
from volley.batchjob.errors import BatchError, CorruptInput
from volley.batchjob.fields import Field, parse_mapping, plan_fields, select_outputs
from volley.batchjob.rows import Piece
from volley.batchjob.sources import NpyColumns, open_source
from volley.serving.types import TensorMetadata

X = Field("X", "X", "FP32", (4,))
K = Field("k", "k", "INT64", (1,))


def rows(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start * 4, (start + n) * 4, dtype=np.float32) / 8).reshape(n, 4)


def read_all(path: Path, fields: list[Field], piece_rows: int = 7) -> dict[str, np.ndarray]:
    source = open_source(path, {f.input for f in fields})
    pieces = list(source.pieces(fields, piece_rows))
    assert all(0 < p.rows <= piece_rows for p in pieces)
    return {f.input: np.concatenate([p.arrays[f.input] for p in pieces]) for f in fields}


def read_until_error(path: Path, fields: list[Field]) -> tuple[int, CorruptInput]:
    """Rows yielded before the reader failed, and its error."""
    got = 0
    with pytest.raises(CorruptInput) as info:
        for piece in open_source(path, set()).pieces(fields, 16):
            got += piece.rows
    return got, info.value


def write_parquet(path: Path, x: np.ndarray, k: np.ndarray) -> None:
    table = pa.table({"X": pa.array(list(x), pa.list_(pa.float32())), "k": pa.array(k)})
    pq.write_table(table, path, row_group_size=10)


# -- readers ----------------------------------------------------------------------------------
def test_parquet_lists_and_scalars(tmp_path: Path) -> None:
    x, k = rows(25), np.arange(25)
    write_parquet(tmp_path / "d.parquet", x, k)
    source = open_source(tmp_path / "d.parquet", set())
    assert source.columns == ["X", "k"] and source.total_rows == 25
    got = read_all(tmp_path / "d.parquet", [X, K])
    np.testing.assert_array_equal(got["X"], x)
    assert got["X"].dtype == np.float32
    np.testing.assert_array_equal(got["k"], k.reshape(25, 1))


def test_parquet_null_names_its_row_after_yielding_the_rows_before(tmp_path: Path) -> None:
    values: list[list[float] | None] = [list(r) for r in rows(30)]
    values[21] = None
    pq.write_table(
        pa.table({"X": pa.array(values, pa.list_(pa.float32()))}), tmp_path / "d.parquet"
    )
    got, err = read_until_error(tmp_path / "d.parquet", [X])
    assert got == 21
    assert str(tmp_path / "d.parquet") in err.message and "row 21" in err.message
    assert "null" in err.message


def test_parquet_short_list_names_its_row(tmp_path: Path) -> None:
    values = [list(r) for r in rows(30)]
    values[17] = values[17][:3]
    pq.write_table(
        pa.table({"X": pa.array(values, pa.list_(pa.float32()))}), tmp_path / "d.parquet"
    )
    got, err = read_until_error(tmp_path / "d.parquet", [X])
    assert got == 17 and "row 17" in err.message and "3 values" in err.message


def test_csv_json_cells_and_scalars(tmp_path: Path) -> None:
    x = rows(20)
    lines = ["k,X,note"] + [f'{i},"{json.dumps(r.tolist())}",n{i}' for i, r in enumerate(x)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    source = open_source(tmp_path / "d.csv", set())
    assert source.columns == ["k", "X", "note"] and source.total_rows is None
    got = read_all(tmp_path / "d.csv", [X, K, Field("t", "note", "BYTES", (1,))])
    np.testing.assert_array_equal(got["X"], x)
    np.testing.assert_array_equal(got["k"], np.arange(20).reshape(20, 1))
    assert got["t"][3, 0] == "n3"


def test_csv_bad_cell_names_its_line_even_after_a_quoted_newline(tmp_path: Path) -> None:
    lines = ["k,note"] + [f"{i},plain" for i in range(10)]
    lines[4] = '3,"two\nlines"'
    lines.append("x,plain")
    lines += [f"{i},plain" for i in range(5)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    got, err = read_until_error(tmp_path / "d.csv", [K, Field("t", "note", "BYTES", (1,))])
    assert got == 10
    # the header is line 1 and row 3 spans lines 5 and 6: 'x' is on line 13
    assert "line 13" in err.message and "'x'" in err.message


def test_csv_wrong_field_count_and_bad_bytes_name_their_lines(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("k\n1\n2\n3,4\n5\n")
    got, err = read_until_error(tmp_path / "a.csv", [K])
    assert got == 2 and "line 4" in err.message and "2 fields" in err.message
    (tmp_path / "b.csv").write_bytes(b"k,t\n1,a\n2,\xff\n")
    got, err = read_until_error(tmp_path / "b.csv", [K, Field("t", "t", "BYTES", (1,))])
    assert got == 1 and "line 3" in err.message and "UTF-8" in err.message


def test_jsonl_errors_name_their_lines(tmp_path: Path) -> None:
    good = [json.dumps({"X": r.tolist(), "k": i}) for i, r in enumerate(rows(40))]
    cases = {
        "not json": ("{nope", "not valid JSON"),
        "missing key": (json.dumps({"k": 1}), "no column X"),
        "a string": (json.dumps({"X": [1, "oops", 3, 4], "k": 1}), "'oops' is not a number"),
        "too short": (json.dumps({"X": [1, 2], "k": 1}), "shape [2]"),
    }
    for name, (line, reason) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join([*good[:33], "", line, *good[33:]]) + "\n")
        got, err = read_until_error(path, [X, K])
        assert got == 33, name
        assert f"{path}: line 35: " in err.message and reason in err.message, err.message


def test_jsonl_rejects_floats_for_an_integer_input(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"k": 1}\n{"k": 2}\n{"k": 2.5}\n')
    got, err = read_until_error(path, [K])
    assert got == 2 and "line 3" in err.message and "INT64" in err.message


def test_npy_plain_structured_and_corrupt(tmp_path: Path) -> None:
    x = rows(30)
    np.save(tmp_path / "x.npy", x)
    source = open_source(tmp_path / "x.npy", set())
    assert source.columns == ["file"] and source.total_rows == 30
    np.testing.assert_array_equal(
        read_all(tmp_path / "x.npy", [Field("X", "file", "FP32", (4,))])["X"], x
    )
    table = np.zeros(5, dtype=[("k", "<i8"), ("X", "<f4", (4,))])
    table["k"] = np.arange(5)
    np.save(tmp_path / "s.npy", table)
    assert open_source(tmp_path / "s.npy", set()).columns == ["k", "X"]
    np.testing.assert_array_equal(read_all(tmp_path / "s.npy", [K])["k"].ravel(), np.arange(5))
    (tmp_path / "bad.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:200])
    with pytest.raises(CorruptInput, match=r"bad\.npy: not a readable \.npy file"):
        open_source(tmp_path / "bad.npy", set())
    np.save(tmp_path / "f.npy", np.ones((3, 1)))
    with pytest.raises(CorruptInput, match="INT64"):
        read_all(tmp_path / "f.npy", [Field("k", "file", "INT64", (1,))])


def test_corrupt_parquet_file_is_named(tmp_path: Path) -> None:
    write_parquet(tmp_path / "d.parquet", rows(10), np.arange(10))
    (tmp_path / "t.parquet").write_bytes((tmp_path / "d.parquet").read_bytes()[:100])
    with pytest.raises(CorruptInput, match=r"t\.parquet: not a readable Parquet file"):
        open_source(tmp_path / "t.parquet", set())


def test_directory_is_one_stream_of_rows_in_name_order(tmp_path: Path) -> None:
    x = rows(30)
    write_parquet(tmp_path / "a.parquet", x[:10], np.arange(10))
    (tmp_path / "b.jsonl").write_text(
        "".join(json.dumps({"X": r.tolist(), "k": 0}) + "\n" for r in x[10:17])
    )
    (tmp_path / "c.csv").write_text("X,k\n" + "".join(f'"{r.tolist()}",0\n' for r in x[17:]))
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(tmp_path, {"X"})
    assert source.columns == ["X", "k"] and source.total_rows is None
    chunks = list(chunked(source.pieces([X], 4), 8))
    assert [(c.index, c.first_row, c.rows) for c in chunks] == [
        (0, 0, 8),
        (1, 8, 8),
        (2, 16, 8),
        (3, 24, 6),
    ]
    np.testing.assert_array_equal(np.concatenate([c.arrays["X"] for c in chunks]), x)


def test_directory_file_without_the_column_is_named(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", rows(3), np.arange(3))
    (tmp_path / "b.jsonl").write_text('{"Y": 1}\n')
    with pytest.raises(CorruptInput, match=r"b\.jsonl: line 1: has no column X"):
        list(open_source(tmp_path, {"X"}).pieces([X], 4))


def test_directory_of_input_named_npy_files_is_read_as_columns(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", rows(9))
    np.save(tmp_path / "b.npy", -rows(9))
    source = open_source(tmp_path, {"a", "b"})
    assert isinstance(source, NpyColumns) and source.total_rows == 9
    fields = [Field("a", "a", "FP32", (4,)), Field("b", "b", "FP32", (4,))]
    pieces = list(source.pieces(fields, 4))
    np.testing.assert_array_equal(np.concatenate([p.arrays["b"] for p in pieces]), -rows(9))
    np.save(tmp_path / "b.npy", rows(8))
    with pytest.raises(BatchError, match="different row counts"):
        open_source(tmp_path, {"a", "b"})


def test_missing_input_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="no such file"):
        open_source(tmp_path / "nope.parquet", set())
    with pytest.raises(BatchError, match=r"no \.parquet"):
        open_source(tmp_path, set())
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(BatchError, match="unsupported input"):
        open_source(tmp_path / "x.txt", set())
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(BatchError, match=r"e\.jsonl: no rows to score"):
        open_source(tmp_path / "e.jsonl", set())
    (tmp_path / "h.csv").write_text("k\n")
    assert list(open_source(tmp_path / "h.csv", set()).pieces([K], 4)) == []


# -- chunks ------------------------------------------------------------------------------------
def test_chunks_do_not_depend_on_piece_boundaries() -> None:
    x = rows(50)

    def pieces(sizes: list[int]) -> list[Piece]:
        out, start = [], 0
        for n in sizes:
            out.append(Piece(n, {"X": x[start : start + n]}))
            start += n
        return out

    a = list(chunked(pieces([50]), 16))
    b = list(chunked(pieces([3, 0, 20, 1, 26]), 16))
    assert [c.rows for c in a] == [16, 16, 16, 2]
    assert [(c.first_row, c.digest) for c in a] == [(c.first_row, c.digest) for c in b]
    changed = x.copy()
    changed[40, 0] += 1
    c = list(chunked([Piece(50, {"X": changed})], 16))
    assert [c1.digest == c2.digest for c1, c2 in zip(a, c, strict=True)] == [
        True,
        True,
        False,
        True,
    ]


# -- mapping and conversion ---------------------------------------------------------------------
INPUTS = [TensorMetadata("a", "FP32", [-1, 3]), TensorMetadata("b", "FP32", [-1, 1])]


def test_plan_fields_by_name_and_by_map() -> None:
    fields = plan_fields(["b", "a", "z"], INPUTS, {})
    assert [(f.input, f.column, f.row_shape) for f in fields] == [
        ("a", "a", (3,)),
        ("b", "b", (1,)),
    ]
    fields = plan_fields(["a", "b", "z"], INPUTS, {"z": "a", "a": "b"})
    assert [(f.input, f.column) for f in fields] == [("a", "z"), ("b", "a")]
    single = plan_fields(["file"], [TensorMetadata("X", "FP32", [-1, 4])], {})
    assert single[0].column == "file"


def test_plan_fields_errors() -> None:
    with pytest.raises(BatchError, match=r"no column feeds model input\(s\) b.*--map"):
        plan_fields(["a"], INPUTS, {})
    with pytest.raises(BatchError, match="no input 'c'"):
        plan_fields(["a", "b"], INPUTS, {"a": "c"})
    with pytest.raises(BatchError, match="no column 'q'"):
        plan_fields(["a", "b"], INPUTS, {"q": "a"})
    with pytest.raises(BatchError, match="variable first dimension"):
        plan_fields(["x"], [TensorMetadata("x", "FP32", [4])], {})
    with pytest.raises(BatchError, match="COLUMN=INPUT"):
        parse_mapping(["nothing"])
    assert parse_mapping(["a=b", "c=d=e"]) == {"a": "b", "c=d": "e"}


def test_select_outputs() -> None:
    outs = [TensorMetadata("sum", "FP32", [-1, 3]), TensorMetadata("diff", "FP32", [-1, 3])]
    assert [t.name for t in select_outputs(outs, [], "parquet")] == ["sum", "diff"]
    assert [t.name for t in select_outputs(outs, ["diff"], "npy")] == ["diff"]
    with pytest.raises(BatchError, match="--output-name"):
        select_outputs(outs, [], "npy")
    with pytest.raises(BatchError, match="BYTES"):
        select_outputs([TensorMetadata("s", "BYTES", [-1])], [], "npy")
    with pytest.raises(BatchError, match="model has outputs sum, diff"):
        select_outputs(outs, ["nope"], "parquet")
    per_row = TensorMetadata("ids", "INT64", [-1])
    total = TensorMetadata("total", "INT64", [1])
    assert select_outputs([per_row, total], [], "parquet") == [per_row]
    with pytest.raises(BatchError, match=r"'total' has shape \[1\], not a row per input row"):
        select_outputs([per_row, total], ["total"], "parquet")
    with pytest.raises(BatchError, match="no output of the model has a row per input row"):
        select_outputs([total], [], "parquet")


def test_conversion_rules() -> None:
    scalar = Field("s", "s", "FP32", ())
    assert from_values([1, 2.5], scalar).dtype == np.float32
    assert from_values([[1], [2]], scalar).shape == (2,)
    assert from_values([1, 2], Field("s", "s", "FP32", (1,))).shape == (2, 1)
    assert from_values([[1, 2], [3, 4]], Field("v", "v", "INT32", (-1,))).dtype == np.int32
    with pytest.raises(RowError) as info:
        from_values([[1, 2], [3, 4, 5]], Field("v", "v", "INT32", (-1,)))
    assert info.value.row == 1
    assert from_values(["a", "b"], Field("t", "t", "BYTES", (1,)))[1, 0] == "b"
    assert from_values([], X).shape == (0, 4)
