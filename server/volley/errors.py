"""The one exception tree of Volley; each class carries the gRPC status it maps to."""

from __future__ import annotations

import grpc


class VolleyError(Exception):
    """Base of every error Volley reports to a client.

    The message is shown to the client as the gRPC status details, so it must say what was
    wrong in the client's terms and never leak internals.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(VolleyError):
    """The request is malformed or does not match the model."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(VolleyError):
    """Unknown model or version."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(VolleyError):
    """Model not ready, server draining, or queue full."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(VolleyError):
    """No memory left for a model within its budget."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(VolleyError):
    """The request's queue timeout or deadline passed before it ran."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(VolleyError):
    """A protocol feature Volley does not implement."""

    code = grpc.StatusCode.UNIMPLEMENTED


class AlreadyExists(VolleyError):
    """A resource of that name already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Internal(VolleyError):
    """A backend failed; the details are logged, not sent."""

    code = grpc.StatusCode.INTERNAL


class ConfigError(InvalidArgument):
    """A model configuration or repository layout is invalid.

    ``path`` names the file at fault and ``hint`` says how to fix it; both are shown by
    ``volley repo check``.
    """

    def __init__(self, message: str, *, path: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.hint = hint
