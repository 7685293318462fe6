"""Row pieces, the unit every reader yields, and how a piece holding a bad row is cut short."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from volley.batchjob.convert import RowError, from_values
from volley.batchjob.errors import CorruptInput
from volley.batchjob.fields import Field


@dataclass(slots=True)
class Piece:
    """Consecutive rows of the input, as the arrays of the inputs they feed."""

    rows: int
    arrays: dict[str, np.ndarray]


class Reader(Protocol):
    """One input: its columns, its row count when known, and its rows piece by piece."""

    columns: list[str]
    total_rows: int | None

    def pieces(self, fields: Sequence[Field], rows: int) -> Iterator[Piece]:
        """Pieces of at most ``rows`` rows holding the arrays of ``fields``."""
        ...


Convert = Callable[[Field, int], np.ndarray]


def build_piece(
    rows: int, fields: Sequence[Field], convert: Convert
) -> tuple[Piece | None, RowError | None]:
    """The piece of ``rows`` rows (``convert(field, n)``: the first n rows of a field), or the
    rows before the earliest bad row and that row's error."""
    try:
        return Piece(rows, {f.input: convert(f, rows) for f in fields}), None
    except RowError:
        pass
    worst: RowError | None = None
    for f in fields:
        try:
            convert(f, rows)
        except RowError as exc:
            key = -1 if exc.row is None else exc.row
            if worst is None or key < (-1 if worst.row is None else worst.row):
                worst = exc
    assert worst is not None
    if not worst.row:
        return None, worst
    try:
        return Piece(worst.row, {f.input: convert(f, worst.row) for f in fields}), worst
    except RowError:
        return None, worst


def values_pieces(
    path: Path, fields: Sequence[Field], values: dict[str, list[Any]], lines: list[int]
) -> Iterator[Piece]:
    """The piece of parsed values read from ``lines`` of a text file (CSV, JSON lines)."""
    if not lines:
        return
    piece, err = build_piece(len(lines), fields, lambda f, n: from_values(values[f.input][:n], f))
    if piece is not None:
        yield piece
    if err is not None:
        where = f"line {lines[err.row]}" if err.row is not None else ""
        raise CorruptInput(path, where, err.reason)


def require_columns(path: Path, columns: Sequence[str], fields: Sequence[Field]) -> None:
    """Fail naming the file when it lacks a column the job reads."""
    missing = [f.column for f in fields if f.column not in columns]
    if missing:
        raise CorruptInput(
            path, "", f"has no column {', '.join(missing)} (its columns: {', '.join(columns)})"
        )
