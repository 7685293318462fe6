"""Log formats, the error-flood limit and the run-time log settings."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from volley.errors import InvalidArgument
from volley.telemetry.logs import JsonFormatter, LogControl, RateLimit, configure


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, restored after the test."""
    logger = logging.getLogger()
    handlers, level = list(logger.handlers), logger.level
    yield logger
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in handlers:
        logger.addHandler(h)
    logger.setLevel(level)


def test_json_lines(root: logging.Logger) -> None:
    out = io.StringIO()
    configure("INFO", "json", out)
    log = logging.getLogger("volley.test")
    log.info("model '%s' loaded", "m")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    log.debug("not shown")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "INFO" and first["logger"] == "volley.test"
    assert first["message"] == "model 'm' loaded" and first["time"].endswith("Z")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_text_lines(root: logging.Logger) -> None:
    out = io.StringIO()
    configure("WARNING", "text", out)
    logging.getLogger("volley.test").warning("careful")
    logging.getLogger("volley.test").info("quiet")
    (line,) = out.getvalue().splitlines()
    assert line.endswith("WARNING volley.test: careful")


def record(level: int = logging.ERROR, line: int = 10) -> logging.LogRecord:
    return logging.LogRecord("volley", level, "/x.py", line, "bad request %d", (1,), None)


def test_error_floods_are_limited_then_summarised() -> None:
    now = [0.0]
    limit = RateLimit(burst=5, period_s=10)
    limit._clock = lambda: now[0]
    passed = [limit.filter(record()) for _ in range(1000)]
    assert sum(passed) == 5
    assert all(limit.filter(record(logging.INFO)) for _ in range(50))
    assert limit.filter(record(line=11))  # another call site has its own budget
    now[0] = 10.5
    summary = record()
    assert limit.filter(summary)
    assert "995 similar message(s) dropped" in summary.getMessage()
    assert sum(limit.filter(record()) for _ in range(10)) == 4  # the rest of the new window


def test_log_settings_change_levels_and_format(root: logging.Logger) -> None:
    out = io.StringIO()
    configure("INFO", "text", out)
    control = LogControl("text")
    assert control.settings() == {
        "log_file": "",
        "log_info": True,
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": 0,
        "log_format": "text",
    }
    control.update({"log_verbose_level": 1})
    assert root.level == logging.DEBUG and control.settings()["log_verbose_level"] == 1
    control.update({"log_verbose_level": 0, "log_info": False})
    assert root.level == logging.WARNING
    control.update({"log_format": "json"})
    logging.getLogger("volley.test").warning("now json")
    assert json.loads(out.getvalue().splitlines()[-1])["message"] == "now json"
    assert isinstance(root.handlers[0].formatter, JsonFormatter)
    control.update({"log_warning": False, "log_error": False})
    assert root.level == logging.CRITICAL


@pytest.mark.parametrize(
    "changes",
    [
        {"log_file": "/tmp/volley.log"},
        {"log_info": 1},
        {"log_verbose_level": True},
        {"log_format": "xml"},
        {"log_colour": "red"},
    ],
)
def test_bad_log_settings_are_refused(root: logging.Logger, changes: dict[str, object]) -> None:
    control = LogControl()
    before = control.settings()
    with pytest.raises(InvalidArgument):
        control.update(changes)
    assert control.settings() == before
