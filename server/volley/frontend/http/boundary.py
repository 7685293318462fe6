"""The HTTP transport's one error boundary: every exception becomes a status code here."""

from __future__ import annotations

import asyncio
import logging

from volley.errors import ResourceExhausted, Status, VolleyError

log = logging.getLogger("volley.frontend")

#: Protocol status -> HTTP status code. Triton's own mapping where it has one (INTERNAL 500,
#: NOT_FOUND 404, UNAVAILABLE 503, UNSUPPORTED 501, everything it cannot name 400).
_CODES: dict[Status, int] = {
    Status.UNKNOWN: 400,
    Status.INVALID_ARGUMENT: 400,
    Status.NOT_FOUND: 404,
    Status.ALREADY_EXISTS: 409,
    Status.UNAVAILABLE: 503,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.DEADLINE_EXCEEDED: 504,
    Status.UNIMPLEMENTED: 501,
    Status.PERMISSION_DENIED: 403,
    Status.CANCELLED: 400,
    Status.INTERNAL: 500,
}


class BodyTooLarge(ResourceExhausted):
    """A request body (or its decompressed form) over the frontend's limit: HTTP 413."""


def to_http(exc: BaseException) -> tuple[int, str]:
    """HTTP status code and client-facing message for ``exc``; unexpected errors hide details."""
    if isinstance(exc, BodyTooLarge):
        return 413, exc.message
    if isinstance(exc, VolleyError):
        return _CODES[exc.code], exc.message
    if isinstance(exc, asyncio.CancelledError):
        return 400, "the request was cancelled"
    log.error("unexpected error", exc_info=exc)
    return 500, "internal error"
