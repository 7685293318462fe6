"""Row pieces regrouped into numbered chunks of a fixed row count, each with a content digest.

Chunk ``i`` always holds input rows ``i * chunk_rows`` up to the next chunk, whatever the files
and blocks the rows came in, so a resumed job numbers its chunks as the first run did; the
digest (of the arrays sent to the model) tells whether a chunk's rows are the ones scored then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from volley.batchjob.errors import BatchError
from volley.batchjob.rows import Piece
from volley.model.tensors import serialize_bytes


@dataclass(slots=True)
class Chunk:
    """Rows ``first_row`` to ``first_row + rows - 1`` of the input, by input name."""

    index: int
    first_row: int
    rows: int
    arrays: dict[str, np.ndarray]
    digest: str

    @property
    def last_row(self) -> int:
        """The index of the chunk's last row."""
        return self.first_row + self.rows - 1


def digest(arrays: dict[str, np.ndarray]) -> str:
    """A hash of the arrays' names, types, shapes and values."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = arrays[name]
        h.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype == object:
            h.update(serialize_bytes(array))
        else:
            h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def _concat(pieces: list[Piece], first_row: int) -> Piece:
    if len(pieces) == 1:
        return pieces[0]
    arrays: dict[str, np.ndarray] = {}
    for name in pieces[0].arrays:
        parts = [p.arrays[name] for p in pieces]
        try:
            arrays[name] = np.concatenate(parts)
        except ValueError as exc:
            shapes = sorted({str(list(p.shape[1:])) for p in parts})
            raise BatchError(
                f"input '{name}': the rows from row {first_row} on have different shapes "
                f"({', '.join(shapes)}); the rows of a chunk must share a shape"
            ) from exc
    return Piece(sum(p.rows for p in pieces), arrays)


def _head(piece: Piece, rows: int) -> tuple[Piece, Piece]:
    head = Piece(rows, {k: v[:rows] for k, v in piece.arrays.items()})
    tail = Piece(piece.rows - rows, {k: v[rows:] for k, v in piece.arrays.items()})
    return head, tail


def chunked(pieces: Iterable[Piece], chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of ``chunk_rows`` rows (the last one shorter), numbered from 0."""
    if chunk_rows < 1:
        raise BatchError("the chunk size must be at least 1 row")
    pending: list[Piece] = []
    buffered = 0
    index = 0
    first_row = 0
    for piece in pieces:
        if not piece.rows:
            continue
        pending.append(piece)
        buffered += piece.rows
        while buffered >= chunk_rows:
            head, tail = _head(_concat(pending, first_row), chunk_rows)
            yield Chunk(index, first_row, chunk_rows, head.arrays, digest(head.arrays))
            index += 1
            first_row += chunk_rows
            buffered -= chunk_rows
            pending = [tail] if tail.rows else []
    if buffered:
        last = _concat(pending, first_row)
        yield Chunk(index, first_row, last.rows, last.arrays, digest(last.arrays))
