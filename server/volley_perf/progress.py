"""A one-line live progress display, redrawn in place on a terminal."""

from __future__ import annotations

import sys
from typing import TextIO


def wanted() -> bool:
    """Progress is shown only when stdout is a terminal (it is drawn on stderr)."""
    return sys.stdout.isatty()


class ProgressLine:
    """Redraws one status line with carriage returns."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._width = 0

    def show(self, text: str) -> None:
        """Replace the line with ``text``."""
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Erase the line."""
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
