"""The one mapping from exceptions to gRPC status codes."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from volley.errors import VolleyError

log = logging.getLogger("volley.frontend")

T = TypeVar("T")


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status code and client-facing message for ``exc``; unexpected errors hide their details."""
    if isinstance(exc, VolleyError):
        return exc.code, exc.message
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, "the call was cancelled"
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)"


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """End the call with the status that ``exc`` maps to."""
    code, message = to_status(exc)
    await context.abort(code, message)


def handled(
    method: Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[T]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[T]]:
    """Decorate a servicer method so every exception ends the call through ``to_status``."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        try:
            return await method(self, request, context)
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises

    return wrapper
