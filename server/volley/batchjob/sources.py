"""Input files read as a stream of row pieces: .parquet, .csv, .jsonl, .npy, or a directory.

Nothing is read whole: Parquet by record batches, CSV by blocks (pyarrow's streaming reader),
JSON lines one line at a time, .npy through a memory map. A row that cannot be read raises
``CorruptInput`` naming the file and the row (Parquet, .npy: 0-based row) or line (CSV, JSON
lines: 1-based line); the rows before it in the same piece are yielded first, so every chunk
that lies wholly before a bad row still gets scored.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from volley.batchjob.convert import RowError, fit, from_arrow
from volley.batchjob.csvfile import CsvReader
from volley.batchjob.errors import BatchError, CorruptInput
from volley.batchjob.fields import Field
from volley.batchjob.rows import Convert, Piece, Reader, build_piece, require_columns, values_pieces

SUFFIXES = (".parquet", ".csv", ".jsonl", ".npy")
#: The column name of a plain (not structured) .npy file's array.
NPY_COLUMN = "file"


def _arrow_converter(batch: Any) -> Convert:
    def convert(field: Field, rows: int) -> np.ndarray:
        return from_arrow(batch.column(field.column).slice(0, rows), field)

    return convert


class ParquetReader:
    """A Parquet file, by record batches of the columns the job reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            meta = pq.read_metadata(path)
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptInput(path, "", f"not a readable Parquet file ({exc})") from exc
        self.columns: list[str] = list(schema.names)
        self.total_rows: int | None = int(meta.num_rows)

    def pieces(self, fields: Sequence[Field], rows: int) -> Iterator[Piece]:
        """Record batches of ``rows`` rows."""
        require_columns(self.path, self.columns, fields)
        done = 0
        try:
            parquet = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptInput(self.path, "", f"not a readable Parquet file ({exc})") from exc
        try:
            batches = parquet.iter_batches(
                batch_size=rows, columns=list(dict.fromkeys(f.column for f in fields))
            )
            while True:
                try:
                    batch = next(batches, None)
                except (pa.ArrowException, OSError) as exc:
                    raise CorruptInput(
                        self.path, f"rows from {done}", f"unreadable ({exc})"
                    ) from exc
                if batch is None:
                    return
                piece, err = build_piece(batch.num_rows, fields, _arrow_converter(batch))
                if piece is not None:
                    yield piece
                if err is not None:
                    where = f"row {done + err.row}" if err.row is not None else ""
                    raise CorruptInput(self.path, where, err.reason)
                done += batch.num_rows
        finally:
            parquet.close()


class JsonLinesReader:
    """JSON lines: one object a line, its keys the columns (blank lines are skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total_rows: int | None = None
        self.columns: list[str] = []
        try:
            with open(path, "rb") as fh:
                for number, line in enumerate(fh, 1):
                    if line.strip():
                        self.columns = list(self._parse(line, number))
                        break
        except OSError as exc:
            raise CorruptInput(path, "", f"cannot be read ({exc})") from exc

    def _parse(self, line: bytes, number: int) -> dict[str, Any]:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CorruptInput(self.path, f"line {number}", f"not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise CorruptInput(self.path, f"line {number}", "not a JSON object")
        return doc

    def pieces(self, fields: Sequence[Field], rows: int) -> Iterator[Piece]:
        """Pieces of ``rows`` lines."""
        values: dict[str, list[Any]] = {f.input: [] for f in fields}
        lines: list[int] = []
        with open(self.path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = self._parse(line, number)
                    require_columns(self.path, list(doc), fields)
                except CorruptInput as exc:
                    yield from values_pieces(self.path, fields, values, lines)
                    raise CorruptInput(self.path, f"line {number}", exc.reason) from exc
                for f in fields:
                    values[f.input].append(doc[f.column])
                lines.append(number)
                if len(lines) >= rows:
                    yield from values_pieces(self.path, fields, values, lines)
                    values = {f.input: [] for f in fields}
                    lines = []
        yield from values_pieces(self.path, fields, values, lines)


class NpyReader:
    """A .npy file through a memory map: one column (``file``), or one per field of a
    structured array."""

    def __init__(self, path: Path, column: str = NPY_COLUMN) -> None:
        self.path = path
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptInput(path, "", f"not a readable .npy file ({exc})") from exc
        if not isinstance(array, np.ndarray) or array.ndim == 0:
            raise CorruptInput(path, "", "holds no rows (a .npy input needs an array of rows)")
        self.array = array
        names = array.dtype.names
        self.columns: list[str] = list(names) if names else [column]
        self.total_rows: int | None = int(array.shape[0])

    def block(self, field: Field, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of ``field``'s column, read into memory."""
        part = self.array[start:stop]
        if self.array.dtype.names:
            part = part[field.column]
        try:
            return fit(np.array(part), field)
        except RowError as exc:
            raise CorruptInput(self.path, "", exc.reason) from exc

    def pieces(self, fields: Sequence[Field], rows: int) -> Iterator[Piece]:
        """Slices of ``rows`` rows."""
        require_columns(self.path, self.columns, fields)
        total = self.array.shape[0]
        for start in range(0, total, rows):
            stop = min(start + rows, total)
            yield Piece(stop - start, {f.input: self.block(f, start, stop) for f in fields})


class NpyColumns:
    """A directory of ``<COLUMN>.npy`` files, one column each, read side by side."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.readers = {p.stem: NpyReader(p, p.stem) for p in files}
        counts = {p.name: self.readers[p.stem].array.shape[0] for p in files}
        if len(set(counts.values())) > 1:
            sizes = ", ".join(f"{name}: {n}" for name, n in counts.items())
            raise BatchError(
                f"{files[0].parent}: the column files have different row counts ({sizes})"
            )
        self.columns = list(self.readers)
        self.total_rows: int | None = next(iter(counts.values()))

    def pieces(self, fields: Sequence[Field], rows: int) -> Iterator[Piece]:
        """Slices of ``rows`` rows of every column file."""
        total = self.total_rows or 0
        for start in range(0, total, rows):
            stop = min(start + rows, total)
            yield Piece(
                stop - start,
                {f.input: self.readers[f.column].block(f, start, stop) for f in fields},
            )


class Files:
    """Files read one after another as one stream of rows; the first names the columns."""

    def __init__(self, path: Path, readers: Sequence[Reader]) -> None:
        self.readers = list(readers)
        self.columns = next((r.columns for r in self.readers if r.columns), [])
        if not self.columns:
            raise BatchError(f"{path}: no rows to score")
        counts = [r.total_rows for r in self.readers]
        self.total_rows = None if None in counts else sum(c or 0 for c in counts)

    def pieces(self, fields: Sequence[Field], rows: int) -> Iterator[Piece]:
        """The pieces of every file, in order."""
        for reader in self.readers:
            yield from reader.pieces(fields, rows)


def open_file(path: Path) -> Reader:
    """The reader of one file, chosen by its suffix."""
    readers: dict[str, Callable[[Path], Reader]] = {
        ".parquet": ParquetReader,
        ".csv": CsvReader,
        ".jsonl": JsonLinesReader,
        ".npy": NpyReader,
    }
    opener = readers.get(path.suffix.lower())
    if opener is None:
        raise BatchError(f"{path}: unsupported input; use one of {', '.join(SUFFIXES)}")
    return opener(path)


def open_source(path: Path, names: Collection[str]) -> Reader:
    """The input at ``path``: a file, or a directory of them in sorted order (a directory of
    ``.npy`` files all named after ``names``, the model's inputs or mapped columns, is read as
    one column per file)."""
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise BatchError(f"{path}: no {', '.join(SUFFIXES)} files in this directory")
        if all(p.suffix.lower() == ".npy" and p.stem in names for p in files):
            return NpyColumns(files)
        return Files(path, [open_file(p) for p in files])
    if not path.is_file():
        raise BatchError(f"{path}: no such file or directory")
    return Files(path, [open_file(path)])
