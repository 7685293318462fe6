"""CSV input: pyarrow's streaming reader, and Python's ``csv`` module where a block fails.

pyarrow reads fast but its errors name no line, so a block that fails to parse or convert is
read again, from its first row, with the ``csv`` module: that yields the good rows before the
bad one and names the bad one's line (``csv``'s line count, right even with quoted newlines).
A cell feeding an input whose rows are lists holds the list as JSON (``"[1.5, 2, 3]"``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pcsv  # type: ignore[import-untyped]

from volley.batchjob.convert import RowError, from_arrow, from_values
from volley.batchjob.errors import CorruptInput
from volley.batchjob.fields import Field
from volley.batchjob.rows import Convert, Piece, build_piece, require_columns, values_pieces
from volley.model import dtypes

_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _arrow_type(field: Field) -> Any:
    """What pyarrow parses a column as (wide types; the cast to the input's type follows)."""
    if not field.scalar or field.datatype == "BYTES":
        return pa.string()
    kind = dtypes.NUMPY[field.datatype].kind
    return {"f": pa.float64(), "i": pa.int64(), "u": pa.uint64(), "b": pa.bool_()}[kind]


def _cell(text: str, field: Field) -> Any:
    """One cell as the value ``from_values`` takes; ValueError when it is not one."""
    if not field.scalar:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError(f"{text!r} is not a JSON list") from None
    if field.datatype == "BYTES":
        return text
    kind = dtypes.NUMPY[field.datatype].kind
    try:
        if kind == "f":
            return float(text)
        if kind == "b":
            return _BOOLS[text.strip().lower()]
        return int(text)
    except (ValueError, KeyError):
        raise ValueError(f"{text!r} is not a {field.datatype} value") from None


def _json_cells(cells: list[str], field: Field) -> list[Any]:
    """JSON cells parsed in one call; cell by cell only to find a bad one."""
    try:
        parsed = orjson.loads("[" + ",".join(cells) + "]")
        if isinstance(parsed, list) and len(parsed) == len(cells):
            return parsed
    except orjson.JSONDecodeError:
        pass
    for i, text in enumerate(cells):
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            raise RowError(i, f"column '{field.column}': {text!r} is not a JSON list") from None
    raise RowError(None, f"column '{field.column}' does not hold one JSON list a cell")


class _Reread(Exception):
    """A block failed: read it again with the ``csv`` module to find the bad line."""


class _NotText(Exception):
    def __init__(self, line: int, exc: UnicodeDecodeError) -> None:
        super().__init__(f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)")
        self.line = line


def _text_lines(fh: IO[bytes]) -> Iterator[str]:
    """Lines decoded one by one: a bad byte is found on its own line, not in a read-ahead."""
    for number, raw in enumerate(fh, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _NotText(number, exc) from None


class CsvReader:
    """A CSV file with a header line naming its columns (blank lines are skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total_rows: int | None = None
        try:
            with open(path, "rb") as fh:
                header = next(csv.reader(_text_lines(fh)), None)
        except (OSError, _NotText, csv.Error) as exc:
            raise CorruptInput(path, "line 1", f"not a readable CSV header ({exc})") from exc
        if not header:
            raise CorruptInput(path, "", "empty: a CSV input needs a header line of column names")
        self.columns: list[str] = header

    def pieces(self, fields: Sequence[Field], rows: int) -> Iterator[Piece]:
        """Pieces of pyarrow's blocks; from a failing block on, of ``rows`` parsed lines."""
        require_columns(self.path, self.columns, fields)
        done = 0
        try:
            reader = pcsv.open_csv(
                self.path,
                convert_options=pcsv.ConvertOptions(
                    column_types={f.column: _arrow_type(f) for f in fields},
                    include_columns=list(dict.fromkeys(f.column for f in fields)),
                ),
            )
            for block in reader:
                for start in range(0, block.num_rows, rows):
                    batch = block.slice(start, rows)
                    piece, err = build_piece(batch.num_rows, fields, self._converter(batch))
                    if err is not None:
                        raise _Reread
                    assert piece is not None
                    yield piece
                    done += batch.num_rows
            return
        except _Reread:
            pass
        except (pa.ArrowException, OSError, UnicodeDecodeError):
            pass
        yield from self._python_rows(fields, rows, done)

    def _converter(self, batch: Any) -> Convert:
        def convert(f: Field, n: int) -> np.ndarray:
            column = batch.column(f.column).slice(0, n)
            if f.scalar:
                return from_arrow(column, f)
            return from_values(_json_cells(column.to_pylist(), f), f)

        return convert

    def _python_rows(self, fields: Sequence[Field], rows: int, skip: int) -> Iterator[Piece]:
        """The rows after the first ``skip``, parsed with the ``csv`` module."""
        index = {name: i for i, name in enumerate(self.columns)}
        values: dict[str, list[Any]] = {f.input: [] for f in fields}
        lines: list[int] = []
        seen = 0
        with open(self.path, "rb") as fh:
            reader = csv.reader(_text_lines(fh))
            next(reader)
            while True:
                bad = ""
                try:
                    record = next(reader, None)
                except csv.Error as exc:
                    record, bad = [], f"malformed CSV ({exc})"
                except _NotText as exc:
                    yield from values_pieces(self.path, fields, values, lines)
                    raise CorruptInput(self.path, f"line {exc.line}", str(exc)) from None
                if record is None:
                    break
                if not record and not bad:
                    continue
                seen += 1
                if seen <= skip and not bad:
                    continue
                if not bad and len(record) != len(self.columns):
                    bad = f"{len(record)} fields where the header has {len(self.columns)}"
                parsed: list[Any] = []
                for f in fields if not bad else ():
                    try:
                        parsed.append(_cell(record[index[f.column]], f))
                    except ValueError as exc:
                        bad = f"column '{f.column}': {exc}"
                        break
                if bad:
                    yield from values_pieces(self.path, fields, values, lines)
                    raise CorruptInput(self.path, f"line {reader.line_num}", bad)
                for f, value in zip(fields, parsed, strict=True):
                    values[f.input].append(value)
                lines.append(reader.line_num)
                if len(lines) >= rows:
                    yield from values_pieces(self.path, fields, values, lines)
                    values = {f.input: [] for f in fields}
                    lines = []
        yield from values_pieces(self.path, fields, values, lines)
