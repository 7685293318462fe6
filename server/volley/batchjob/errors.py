"""The errors of a batch job: each names what the user has to fix.

They are not ``VolleyError``s: those are protocol errors a server answers a client with, these
end a command-line job.
"""

from __future__ import annotations

from pathlib import Path


class BatchError(Exception):
    """A batch job cannot go on; ``message`` says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CorruptInput(BatchError):
    """A row or file of the input cannot be read: names the file and the line or row."""

    def __init__(self, path: Path, location: str, reason: str) -> None:
        self.path = path
        self.location = location
        self.reason = reason
        where = f"{path}: {location}" if location else str(path)
        super().__init__(f"{where}: {reason}")
