"""The progress line of a batch job on stderr, and its summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TextIO

#: Seconds between redraws: on a terminal the line is redrawn in place; elsewhere (a log file)
#: a new line is written, so less often.
TTY_INTERVAL_S = 0.25
LOG_INTERVAL_S = 10.0


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class Summary:
    """What a job did."""

    rows: int = 0
    scored_rows: int = 0
    skipped_rows: int = 0
    chunks: int = 0
    skipped_chunks: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        """Rows scored (not skipped) per second."""
        return self.scored_rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for the end of the job."""
        skipped = (
            f" ({self.skipped_rows} rows in {self.skipped_chunks} chunks already done)"
            if self.skipped_chunks
            else ""
        )
        return (
            f"{self.rows} rows{skipped}, {self.chunks} chunks, {self.seconds:.2f} s, "
            f"{self.rows_per_s:.0f} rows/s, errors: {self.errors}"
        )


class Progress:
    """Rows done out of the total (when known), rows per second and the time left."""

    def __init__(self, total: int | None, stream: TextIO | None) -> None:
        self.total = total
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self.interval = TTY_INTERVAL_S if self.tty else LOG_INTERVAL_S
        self.done = 0
        self.scored = 0
        self.started = time.monotonic()
        self._drawn = self.started
        self._width = 0

    def advance(self, rows: int, *, skipped: bool = False) -> None:
        """Count ``rows`` as done (``skipped``: done by an earlier run); redraw when due."""
        self.done += rows
        if not skipped:
            self.scored += rows
        now = time.monotonic()
        if self.stream is not None and now - self._drawn >= self.interval:
            self._drawn = now
            self._draw(now)

    def text(self, now: float) -> str:
        """The progress line as of ``now``."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.scored / elapsed
        parts = [f"{self.done:,}/{self.total:,} rows" if self.total else f"{self.done:,} rows"]
        if self.total:
            parts.append(f"{100 * self.done / self.total:.1f}%")
        parts.append(f"{rate:,.0f} rows/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        assert self.stream is not None
        text = self.text(now)
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.stream is None:
            return
        self._draw(time.monotonic())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
