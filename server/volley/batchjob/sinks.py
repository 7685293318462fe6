"""The output of a batch job: one part file per chunk, a journal, and the combined file.

Layout, for ``--output preds.parquet``::

    preds.parquet.parts/
        _progress.jsonl               line 1: the job's fingerprint; then one line per written chunk
        part-00000-<digest>.parquet   chunk 0's outputs (and its ``row`` column)
        part-00001-<digest>.parquet   ...

A part is written to a temporary name, flushed to disk and renamed, and only then is its chunk
appended (and flushed) to the journal: a chunk the journal lists always has its complete part,
whenever the job is killed. When every chunk is in, the parts are copied in order into a
temporary file next to the output, renamed onto the output in one step, and the parts
directory is removed.

``--resume`` reopens the parts directory. The fingerprint (model and its versions, the input
path, chunk size, column-to-input map, outputs and format) must match, or the job stops and
says what differs: parts of another job are never mixed in. The input's size and time are
deliberately not in it, because fixing a corrupt row and resuming is the point; instead each
journal line holds the digest of its chunk's input rows, and a chunk is skipped only when its
part exists and the digest of the rows read now is the same. A chunk whose rows changed is
scored again (its line is superseded by a later one), so a resumed job writes what a fresh run
on the same input would. A journal line torn by a crash is dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from volley.batchjob.chunks import Chunk
from volley.batchjob.errors import BatchError
from volley.batchjob.fields import ROW_COLUMN
from volley.model import dtypes
from volley.serving.types import TensorMetadata

JOURNAL = "_progress.jsonl"
FORMATS = {".parquet": "parquet", ".npy": "npy"}


@dataclass(frozen=True, slots=True)
class Record:
    """A written chunk, as the journal lists it."""

    chunk: int
    first_row: int
    rows: int
    digest: str
    part: str


def output_format(path: Path) -> str:
    """``parquet`` or ``npy``, from the output's suffix."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(f"--output {path}: the name must end in .parquet or .npy")
    return fmt


def parts_dir(output: Path) -> Path:
    """Where the parts of ``output`` are kept until the job completes."""
    return output.with_name(output.name + ".parts")


def to_arrow(array: np.ndarray) -> Any:
    """A [rows, ...] array as an Arrow array: a value per row, or (nested) lists."""
    flat = array.reshape(-1)
    if array.dtype == object:
        values = pa.array([v.encode() if isinstance(v, str) else v for v in flat], pa.binary())
    else:
        values = pa.array(flat)
    for level in range(array.ndim - 1, 0, -1):
        count = int(np.prod(array.shape[:level], dtype=np.int64))
        offsets = np.arange(count + 1, dtype=np.int64) * array.shape[level]
        values = pa.LargeListArray.from_arrays(pa.array(offsets), values)
    return values


def arrow_type(t: TensorMetadata) -> Any:
    """The Arrow type ``to_arrow`` gives an output's rows."""
    kind = pa.binary() if t.datatype == "BYTES" else pa.from_numpy_dtype(dtypes.NUMPY[t.datatype])
    for _ in t.shape[1:]:
        kind = pa.large_list(kind)
    return kind


def _fsync_replace(tmp: Path, target: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)


class PartSink:
    """Writes a job's parts and journal, and combines them into the output at the end."""

    def __init__(
        self,
        output: Path,
        outputs: Sequence[TensorMetadata],
        fingerprint: dict[str, Any],
        *,
        resume: bool,
    ) -> None:
        self.output = output
        self.format = output_format(output)
        self.outputs = list(outputs)
        self.dir = parts_dir(output)
        self.records: dict[int, Record] = {}
        self._lock = threading.Lock()
        journal = self.dir / JOURNAL
        if self.dir.exists():
            if not resume:
                raise BatchError(
                    f"{self.dir} holds the parts of an unfinished job: pass --resume to "
                    "continue it, or delete that directory to start over"
                )
            self._reopen(journal, fingerprint)
        else:
            self.dir.mkdir(parents=True)
            line = json.dumps({"volley_batch": 1, "fingerprint": fingerprint}) + "\n"
            tmp = self.dir / (JOURNAL + ".tmp")
            tmp.write_text(line)
            _fsync_replace(tmp, journal)
        self._journal = journal

    def _reopen(self, journal: Path, fingerprint: dict[str, Any]) -> None:
        try:
            data = journal.read_bytes()
            header = json.loads(data.split(b"\n", 1)[0])
            before = header["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BatchError(
                f"{journal} cannot be read ({exc}): delete {self.dir} to start over"
            ) from exc
        if before != fingerprint:
            changed = sorted(
                k for k in fingerprint.keys() | before.keys() if before.get(k) != fingerprint.get(k)
            )
            detail = "; ".join(
                f"{k}: {before.get(k)!r} then, {fingerprint.get(k)!r} now" for k in changed
            )
            raise BatchError(
                f"{self.dir} holds the parts of a different job ({detail}): rerun that job "
                f"with the same arguments, or delete {self.dir} to start over"
            )
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(journal, "rb+") as fh:
                fh.truncate(len(complete))
        for line in complete.split(b"\n")[1:]:
            if not line.strip():
                continue
            try:
                record = Record(**json.loads(line))
            except (ValueError, TypeError) as exc:
                raise BatchError(f"{journal}: a corrupt line ({exc}): delete {self.dir}") from exc
            self.records[record.chunk] = record

    def discard_if_empty(self) -> None:
        """Remove the parts directory when no chunk was ever written (nothing to resume)."""
        if not self.records:
            shutil.rmtree(self.dir, ignore_errors=True)

    def done(self, chunk: Chunk) -> bool:
        """True when the chunk's part exists and was scored from the same rows."""
        record = self.records.get(chunk.index)
        return (
            record is not None
            and record.digest == chunk.digest
            and record.first_row == chunk.first_row
            and record.rows == chunk.rows
            and (self.dir / record.part).is_file()
        )

    def write(self, chunk: Chunk, results: Sequence[dict[str, np.ndarray]]) -> None:
        """Write the part of a scored chunk (``results``: its requests' outputs, in row order)
        and record it in the journal. Safe to call from several threads."""
        # the digest in the name: a part is never overwritten by one of other rows, so a
        # journal line always names the outputs of exactly the rows it describes
        part = f"part-{chunk.index:05d}-{chunk.digest[:12]}.{self.format}"
        tmp = self.dir / f"{part}.tmp-{threading.get_ident()}"
        try:
            if self.format == "parquet":
                self._write_parquet(tmp, chunk, results)
            else:
                self._write_npy(tmp, results)
            _fsync_replace(tmp, self.dir / part)
            record = Record(chunk.index, chunk.first_row, chunk.rows, chunk.digest, part)
            line = json.dumps(asdict(record))
            with self._lock, open(self._journal, "ab") as fh:
                fh.write(line.encode() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise BatchError(f"cannot write {self.dir / part}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        self.records[chunk.index] = record

    def _write_parquet(
        self, tmp: Path, chunk: Chunk, results: Sequence[dict[str, np.ndarray]]
    ) -> None:
        columns = {ROW_COLUMN: pa.array(np.arange(chunk.first_row, chunk.first_row + chunk.rows))}
        for t in self.outputs:
            arrays = [to_arrow(r[t.name]) for r in results]
            columns[t.name] = pa.concat_arrays(arrays) if len(arrays) > 1 else arrays[0]
        pq.write_table(pa.table(columns), tmp)

    def _write_npy(self, tmp: Path, results: Sequence[dict[str, np.ndarray]]) -> None:
        name = self.outputs[0].name
        arrays = [r[name] for r in results]
        try:
            array = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        except ValueError as exc:
            shapes = sorted({str(list(a.shape[1:])) for a in arrays})
            raise BatchError(
                f"output '{name}' has rows of different shapes ({', '.join(shapes)}), which "
                "one .npy array cannot hold: write .parquet"
            ) from exc
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)

    def finish(self, chunks: int) -> None:
        """Combine the parts of chunks ``0 .. chunks - 1`` into the output, atomically, and
        remove the parts directory."""
        records = [self.records.get(i) for i in range(chunks)]
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            raise BatchError(f"{self.dir}: chunks {missing[:10]} were not written")
        ordered = [r for r in records if r is not None]
        tmp = self.output.with_name(f".{self.output.name}.tmp-{os.getpid()}")
        try:
            if self.format == "parquet":
                self._combine_parquet(tmp, ordered)
            else:
                self._combine_npy(tmp, ordered)
            _fsync_replace(tmp, self.output)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        shutil.rmtree(self.dir)

    def _combine_parquet(self, tmp: Path, records: Sequence[Record]) -> None:
        if records:
            schema = pq.read_schema(self.dir / records[0].part)
        else:
            schema = pa.schema(
                [(ROW_COLUMN, pa.int64())] + [(t.name, arrow_type(t)) for t in self.outputs]
            )
        with pq.ParquetWriter(tmp, schema) as writer:
            for r in records:
                writer.write_table(pq.read_table(self.dir / r.part, schema=schema))

    def _combine_npy(self, tmp: Path, records: Sequence[Record]) -> None:
        parts = [np.load(self.dir / r.part, mmap_mode="r") for r in records]
        if parts:
            dtype, row_shape = parts[0].dtype, parts[0].shape[1:]
        else:
            t = self.outputs[0]
            dtype, row_shape = dtypes.NUMPY[t.datatype], tuple(max(d, 0) for d in t.shape[1:])
        for part, r in zip(parts, records, strict=True):
            if part.shape[1:] != row_shape:
                raise BatchError(
                    f"output '{self.outputs[0].name}' has rows of shape {list(part.shape[1:])} "
                    f"in rows {r.first_row}.. but {list(row_shape)} before, which one .npy "
                    "array cannot hold: write .parquet"
                )
        total = sum(p.shape[0] for p in parts)
        if not total:
            with open(tmp, "wb") as fh:
                np.save(fh, np.empty((0, *row_shape), dtype), allow_pickle=False)
            return
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(total, *row_shape))
        row = 0
        for part in parts:
            out[row : row + part.shape[0]] = part
            row += part.shape[0]
        out.flush()
        del out
