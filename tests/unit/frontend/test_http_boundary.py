"""The HTTP error boundary: one mapping from protocol status to HTTP status code."""

from __future__ import annotations

import asyncio
import logging

import pytest

from volley import errors
from volley.errors import Status, VolleyError
from volley.frontend.http.boundary import BodyTooLarge, to_http

EXPECTED = {
    Status.INVALID_ARGUMENT: 400,
    Status.NOT_FOUND: 404,
    Status.ALREADY_EXISTS: 409,
    Status.UNAVAILABLE: 503,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.DEADLINE_EXCEEDED: 504,
    Status.UNIMPLEMENTED: 501,
    Status.PERMISSION_DENIED: 403,
    Status.INTERNAL: 500,
    Status.CANCELLED: 400,
    Status.UNKNOWN: 400,
}


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
def test_every_status_has_an_http_code(status: Status) -> None:
    class Custom(VolleyError):
        code = status

    assert to_http(Custom("what went wrong")) == (EXPECTED[status], "what went wrong")


def test_error_classes_map_by_their_status() -> None:
    assert to_http(errors.ConfigError("bad config"))[0] == 400
    assert to_http(errors.NotFound("x"))[0] == 404
    assert to_http(errors.Unavailable("x"))[0] == 503
    assert to_http(errors.ResourceExhausted("x"))[0] == 429


def test_body_too_large_is_413() -> None:
    assert to_http(BodyTooLarge("too big")) == (413, "too big")


def test_cancellation_is_a_client_error() -> None:
    assert to_http(asyncio.CancelledError())[0] == 400


def test_unexpected_errors_are_500_without_details_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="volley.frontend"):
        status, message = to_http(KeyError("/secret/path"))
    assert (status, message) == (500, "internal error")
    assert "secret" not in message
    assert caplog.records[0].exc_info is not None
