"""The one exception tree of Volley; each class carries the protocol status it maps to.

``Status`` names the KServe v2 / gRPC status codes without importing a transport: each
frontend maps it to its own codes (gRPC status, HTTP status) in exactly one place.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """Protocol status of an error, named as gRPC's ``StatusCode`` members."""

    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    UNAVAILABLE = "UNAVAILABLE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


class VolleyError(Exception):
    """Base of every error Volley reports to a client.

    The message is shown to the client as the gRPC status details, so it must say what was
    wrong in the client's terms and never leak internals.
    """

    code: Status = Status.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(VolleyError):
    """The request is malformed or does not match the model."""

    code = Status.INVALID_ARGUMENT


class NotFound(VolleyError):
    """Unknown model or version."""

    code = Status.NOT_FOUND


class AlreadyExists(VolleyError):
    """Something with that name is already registered."""

    code = Status.ALREADY_EXISTS


class Unavailable(VolleyError):
    """Model not ready, server draining, or queue full."""

    code = Status.UNAVAILABLE


class ResourceExhausted(VolleyError):
    """The server is at its in-flight cap, or no memory is left for a model."""

    code = Status.RESOURCE_EXHAUSTED


class DeadlineExceeded(VolleyError):
    """The request's queue timeout or deadline passed before it ran."""

    code = Status.DEADLINE_EXCEEDED


class Unimplemented(VolleyError):
    """A protocol feature Volley does not implement."""

    code = Status.UNIMPLEMENTED


class Internal(VolleyError):
    """A backend failed; the details are logged, not sent."""

    code = Status.INTERNAL


class ConfigError(InvalidArgument):
    """A model configuration or repository layout is invalid.

    ``path`` names the file at fault and ``hint`` says how to fix it; both are shown by
    ``volley repo check``.
    """

    def __init__(self, message: str, *, path: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.hint = hint
