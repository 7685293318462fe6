"""The errors ``volley perf`` reports as a single line on stderr."""

from __future__ import annotations


class PerfError(Exception):
    """A problem with the target server or the data, explained in one line."""

    #: Exit status of ``volley perf`` when this error stops it.
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(PerfError):
    """A command-line value that cannot be used (bad range, shape, count...)."""

    exit_code = 2
