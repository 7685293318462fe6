"""Part files, the progress journal, resuming and combining of ``volley batch`` outputs, and its
progress line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from volley.batchjob import progress as progress_module
from volley.batchjob.chunks import Chunk, chunked
from volley.batchjob.errors import BatchError
from volley.batchjob.progress import Progress
from volley.batchjob.rows import Piece
from volley.batchjob.sinks import JOURNAL, PartSink, output_format, parts_dir, to_arrow
from volley.serving.types import TensorMetadata

Y = TensorMetadata("Y", "FP32", [-1, 2])
S = TensorMetadata("S", "INT64", [-1])
PRINT: dict[str, Any] = {"model": "m", "chunk_rows": 4}


def make_chunks(n: int = 10, size: int = 4, shift: float = 0.0) -> list[Chunk]:
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + shift
    return list(chunked([Piece(n, {"X": x})], size))


def answers(chunk: Chunk, per_request: int = 3) -> list[dict[str, np.ndarray]]:
    """What a model ``Y = 2 * X, S = row sum`` answers, in requests of ``per_request`` rows."""
    out = []
    for start in range(0, chunk.rows, per_request):
        x = chunk.arrays["X"][start : start + per_request]
        out.append({"Y": 2 * x, "S": x.sum(axis=1).astype(np.int64)})
    return out


def test_output_format_and_parts_dir(tmp_path: Path) -> None:
    assert output_format(tmp_path / "a.PARQUET") == "parquet"
    assert output_format(tmp_path / "a.npy") == "npy"
    with pytest.raises(BatchError, match=r"\.parquet or \.npy"):
        output_format(tmp_path / "a.csv")
    assert parts_dir(tmp_path / "p.parquet") == tmp_path / "p.parquet.parts"


def test_parquet_parts_combine_in_row_order(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    sink = PartSink(out, [Y, S], PRINT, resume=False)
    chunks = make_chunks()
    for chunk in reversed(chunks):
        sink.write(chunk, answers(chunk))
    parts = [f"part-{c.index:05d}-{c.digest[:12]}.parquet" for c in chunks]
    assert sorted(p.name for p in sink.dir.iterdir()) == [JOURNAL, *parts]
    sink.finish(len(chunks))
    table = pq.read_table(out)
    assert table.column_names == ["row", "Y", "S"]
    assert table.column("row").to_pylist() == list(range(10))
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.testing.assert_array_equal(np.array(table.column("Y").to_pylist(), np.float32), 2 * x)
    assert table.column("S").to_pylist() == x.sum(axis=1).astype(np.int64).tolist()
    assert not sink.dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]


def test_npy_output(tmp_path: Path) -> None:
    out = tmp_path / "p.npy"
    sink = PartSink(out, [Y], PRINT, resume=False)
    chunks = make_chunks()
    for chunk in chunks:
        sink.write(chunk, answers(chunk))
    sink.finish(len(chunks))
    np.testing.assert_array_equal(np.load(out), 2 * np.arange(20, dtype=np.float32).reshape(10, 2))


def test_empty_job_writes_an_empty_output(tmp_path: Path) -> None:
    PartSink(tmp_path / "e.parquet", [Y, S], PRINT, resume=False).finish(0)
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 0 and table.column_names == ["row", "Y", "S"]
    PartSink(tmp_path / "e.npy", [Y], PRINT, resume=False).finish(0)
    assert np.load(tmp_path / "e.npy").shape == (0, 2)


def test_an_unfinished_job_needs_resume(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    PartSink(out, [Y], PRINT, resume=False)
    with pytest.raises(BatchError, match=r"--resume.*delete"):
        PartSink(out, [Y], PRINT, resume=False)


def test_resume_skips_only_written_chunks_of_the_same_rows(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    sink = PartSink(out, [Y], PRINT, resume=False)
    chunks = make_chunks()
    sink.write(chunks[0], answers(chunks[0]))
    sink.write(chunks[1], answers(chunks[1]))
    (sink.dir / sink.records[1].part).unlink()
    again = PartSink(out, [Y], PRINT, resume=True)
    assert [again.done(c) for c in chunks] == [True, False, False]
    changed = make_chunks(shift=1.0)
    assert not again.done(changed[0])


def test_resume_refuses_another_job(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    PartSink(out, [Y], PRINT, resume=False)
    with pytest.raises(BatchError, match=r"different job \(chunk_rows: 4 then, 8 now\)"):
        PartSink(out, [Y], {**PRINT, "chunk_rows": 8}, resume=True)


def test_a_torn_journal_line_is_dropped(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    sink = PartSink(out, [Y], PRINT, resume=False)
    chunks = make_chunks()
    sink.write(chunks[0], answers(chunks[0]))
    journal = sink.dir / JOURNAL
    with open(journal, "ab") as fh:
        fh.write(b'{"chunk": 1, "first_r')
    again = PartSink(out, [Y], PRINT, resume=True)
    assert [again.done(c) for c in chunks] == [True, False, False]
    for chunk in chunks[1:]:
        again.write(chunk, answers(chunk))
    lines = journal.read_text().splitlines()
    assert [json.loads(line)["chunk"] for line in lines[1:]] == [0, 1, 2]
    again.finish(3)
    assert pq.read_table(out).column("row").to_pylist() == list(range(10))


def test_a_part_without_a_journal_line_is_not_done(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    sink = PartSink(out, [Y], PRINT, resume=False)
    chunks = make_chunks()
    sink.write(chunks[0], answers(chunks[0]))
    journal = sink.dir / JOURNAL
    journal.write_text(journal.read_text().splitlines()[0] + "\n")
    assert not PartSink(out, [Y], PRINT, resume=True).done(chunks[0])


def test_finish_needs_every_chunk(tmp_path: Path) -> None:
    sink = PartSink(tmp_path / "p.parquet", [Y], PRINT, resume=False)
    chunks = make_chunks()
    sink.write(chunks[0], answers(chunks[0]))
    with pytest.raises(BatchError, match=r"chunks \[1, 2\] were not written"):
        sink.finish(3)
    assert not (tmp_path / "p.parquet").exists()


def test_to_arrow_nests_lists_and_keeps_bytes() -> None:
    cube = np.arange(12, dtype=np.int32).reshape(2, 3, 2)
    assert to_arrow(cube).to_pylist() == cube.tolist()
    assert to_arrow(np.arange(3.0)).to_pylist() == [0.0, 1.0, 2.0]
    text = np.array([["a"], [b"b"]], dtype=object)
    arr = to_arrow(text)
    assert arr.type == pa.large_list(pa.binary()) and arr.to_pylist() == [[b"a"], [b"b"]]
    assert to_arrow(np.zeros((0, 3), np.float32)).to_pylist() == []


def test_rescoring_changed_rows_supersedes_the_old_part(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    sink = PartSink(out, [Y], PRINT, resume=False)
    old, new = make_chunks()[0], make_chunks(shift=1.0)[0]
    sink.write(old, answers(old))
    sink.write(new, answers(new))
    again = PartSink(out, [Y], PRINT, resume=True)
    assert again.done(new) and not again.done(old)
    again.finish(1)
    got = np.array(pq.read_table(out).column("Y").to_pylist(), np.float32)
    np.testing.assert_array_equal(got, 2 * new.arrays["X"])


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    stream = FakeTerminal()
    bar = Progress(1000, stream)
    now[0] += 0.1
    bar.advance(100)
    assert stream.getvalue() == ""  # too soon to redraw
    now[0] += 0.9
    bar.advance(100, skipped=True)
    assert stream.getvalue() == "\r200/1,000 rows  20.0%  100 rows/s  ETA 0:00:08  elapsed 0:00:01"
    bar.close()
    assert stream.getvalue().endswith("\n")
    quiet = Progress(None, None)
    quiet.advance(5)
    quiet.close()
    assert "5 rows  " in quiet.text(now[0] + 1) and "ETA" not in quiet.text(now[0] + 1)


def test_a_job_that_wrote_nothing_leaves_no_parts(tmp_path: Path) -> None:
    empty = PartSink(tmp_path / "e.parquet", [Y], PRINT, resume=False)
    empty.discard_if_empty()
    assert not empty.dir.exists()
    sink = PartSink(tmp_path / "p.parquet", [Y], PRINT, resume=False)
    chunk = make_chunks()[0]
    sink.write(chunk, answers(chunk))
    sink.discard_if_empty()
    assert PartSink(tmp_path / "p.parquet", [Y], PRINT, resume=True).done(chunk)
