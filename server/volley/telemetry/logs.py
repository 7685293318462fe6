"""Server logging: text or JSON lines, error floods rate-limited, levels changeable at run time.

``configure`` installs one handler on the root logger. ``RateLimit`` lets through at most
``burst`` warnings or errors of the same call site per ``period_s`` and then one line saying
how many were dropped, so a client that provokes errors cannot flood the log. ``LogControl``
is Triton's logging extension (``LogSettings``): ``log_info``, ``log_warning``, ``log_error``,
``log_verbose_level`` and ``log_format``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from volley.errors import InvalidArgument

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


JsonFormatter.converter = time.gmtime


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``text`` or ``json``."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(_TEXT)
    raise InvalidArgument(f"log format '{fmt}': expected text or json")


class RateLimit(logging.Filter):
    """At most ``burst`` WARNING-or-worse records per call site every ``period_s``."""

    def __init__(self, burst: int = 10, period_s: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.period_s = period_s
        self._sites: dict[tuple[str, int], list[float]] = {}
        self._clock = time.monotonic

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        site = (record.pathname, record.lineno)
        now = self._clock()
        window = self._sites.get(site)
        if window is None or now - window[0] >= self.period_s:
            dropped = int(window[2]) if window is not None else 0
            self._sites[site] = [now, 1.0, 0.0]
            if len(self._sites) > 10_000:  # call sites are finite; bound it anyway
                self._sites = {site: self._sites[site]}
            if dropped:
                record.msg = f"{record.msg} [{dropped} similar message(s) dropped]"
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr) at ``level`` in ``fmt``, error floods rate-limited."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class LogControl:
    """Triton's ``LogSettings`` over the root logger and its handlers."""

    def __init__(self, fmt: str = "text") -> None:
        self.format = fmt
        #: How many levels of DEBUG detail (0: none).
        self.verbose = 0

    def settings(self) -> dict[str, bool | int | str]:
        """The current settings, as Triton names them."""
        level = logging.getLogger().getEffectiveLevel()
        return {
            "log_file": "",
            "log_info": level <= logging.INFO,
            "log_warning": level <= logging.WARNING,
            "log_error": level <= logging.ERROR,
            "log_verbose_level": self.verbose if level <= logging.DEBUG else 0,
            "log_format": self.format,
        }

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``LogSettings`` changes (validated all first, then applied together)."""
        current = self.settings()
        for key, value in changes.items():
            if key not in current:
                raise InvalidArgument(f"unknown log setting '{key}'")
            if key == "log_file":
                if value not in ("", None):
                    raise InvalidArgument("log_file: logs go to standard error only")
                continue
            expected = type(current[key])
            if type(value) is not expected:
                raise InvalidArgument(
                    f"log setting '{key}' expects a {expected.__name__}, got {value!r}"
                )
            if key == "log_verbose_level" and isinstance(value, int) and value < 0:
                raise InvalidArgument("log_verbose_level must not be negative")
            if key == "log_format" and isinstance(value, str):
                value = {"default": "text", "iso8601": "text"}.get(value.lower(), value)
                formatter(value)
            current[key] = value
        self.verbose = int(current["log_verbose_level"])
        if self.verbose > 0:
            level = logging.DEBUG
        elif current["log_info"]:
            level = logging.INFO
        elif current["log_warning"]:
            level = logging.WARNING
        elif current["log_error"]:
            level = logging.ERROR
        else:
            level = logging.CRITICAL
        root = logging.getLogger()
        root.setLevel(level)
        if current["log_format"] != self.format:
            self.format = str(current["log_format"])
            for handler in root.handlers:
                handler.setFormatter(formatter(self.format))
