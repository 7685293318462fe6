"""The gRPC transport's one error boundary: every exception becomes a status here."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from volley.errors import InvalidArgument, Status, VolleyError
from volley.frontend.grpc import restriction

log = logging.getLogger("volley.frontend")

T = TypeVar("T")

_CODES: dict[Status, grpc.StatusCode] = {s: grpc.StatusCode[s.value] for s in Status}


class Malformed:
    """What a deserializer hands on for bytes that are not the method's message."""

    __slots__ = ("error", "message")

    def __init__(self, message: str, error: str) -> None:
        self.message = message
        self.error = error

    def problem(self) -> InvalidArgument:
        """The error the call is answered with."""
        return InvalidArgument(f"malformed {self.message} message: {self.error}")


def lenient(cls: Any) -> Callable[[bytes], Any]:
    """A request deserializer that returns ``Malformed`` instead of raising."""
    parse = cls.FromString
    name = cls.DESCRIPTOR.name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(name, str(exc) or "not a protobuf message")

    return deserialize


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status code and client-facing message for ``exc``; unexpected errors hide their details."""
    if isinstance(exc, VolleyError):
        return _CODES[exc.code], exc.message
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, "the call was cancelled"
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)"


Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[T]]


def guarded(group: str) -> Callable[[Handler[T]], Handler[T]]:
    """Decorate a unary servicer method of API ``group``: its restriction is checked first
    (when the servicer's ``restrictions`` name the group), and every exception ends the call
    via ``to_status``."""

    def decorate(method: Handler[T]) -> Handler[T]:
        @functools.wraps(method)
        async def wrapper(
            self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> T:
            try:
                if self.restrictions:
                    restriction.check(self.restrictions, group, context)
                if type(request) is Malformed:
                    raise request.problem()
                return await method(self, request, context)
            except Exception as exc:
                code, message = to_status(exc)
                await context.abort(code, message)
                raise  # unreachable: abort raises

        return wrapper

    return decorate
