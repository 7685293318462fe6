"""The gRPC error boundary: every exception becomes a status code and a safe message."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest

from volley import errors
from volley.errors import Status, VolleyError
from volley.frontend.grpc.boundary import guarded, to_status


def error_classes() -> list[type[VolleyError]]:
    found: list[type[VolleyError]] = []
    pending: list[type[VolleyError]] = [VolleyError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_class_of_the_module_is_covered() -> None:
    module_classes = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, VolleyError)
    }
    assert module_classes <= set(error_classes())
    assert {errors.InvalidArgument, errors.ConfigError, errors.Internal} <= module_classes


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_volley_errors_map_to_the_grpc_code_of_the_same_name(cls: type[VolleyError]) -> None:
    exc = cls("what went wrong")
    code, message = to_status(exc)
    assert code is getattr(grpc.StatusCode, cls.code.name)
    assert code.name == cls.code.value
    assert message == "what went wrong"


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
def test_every_status_maps_to_its_grpc_code(status: Status) -> None:
    class Custom(VolleyError):
        code = status

    code, message = to_status(Custom("m"))
    assert code is grpc.StatusCode[status.value]
    assert message == "m"


def test_specific_codes() -> None:
    assert to_status(errors.NotFound("x"))[0] is grpc.StatusCode.NOT_FOUND
    assert to_status(errors.ConfigError("x"))[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert to_status(errors.Unavailable("x"))[0] is grpc.StatusCode.UNAVAILABLE
    assert to_status(errors.DeadlineExceeded("x"))[0] is grpc.StatusCode.DEADLINE_EXCEEDED
    assert to_status(VolleyError("x"))[0] is grpc.StatusCode.UNKNOWN


def test_cancelled_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="volley.frontend"):
        code, message = to_status(asyncio.CancelledError())
    assert code is grpc.StatusCode.CANCELLED
    assert "cancelled" in message
    assert caplog.records == []


def test_unexpected_error_is_internal_hidden_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    secret = "secret-path /etc/volley/key"
    try:
        raise ValueError(secret)
    except ValueError as exc:
        caught = exc
    with caplog.at_level(logging.ERROR, logger="volley.frontend"):
        code, message = to_status(caught)
    assert code is grpc.StatusCode.INTERNAL
    assert secret not in message
    assert "ValueError" not in message
    assert message  # still says something
    (record,) = [r for r in caplog.records if r.name == "volley.frontend"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is caught
    assert secret in caplog.text
    assert "Traceback" in caplog.text


class Aborted(Exception):
    """What the fake context's ``abort`` raises (grpc raises its own exception)."""


class FakeContext:
    def __init__(self) -> None:
        self.calls: list[tuple[grpc.StatusCode, str]] = []

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.calls.append((code, details))
        raise Aborted(details)


class Servicer:
    restrictions: dict[str, tuple[str, str]] = {}

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.seen: list[Any] = []

    @guarded("inference")
    async def Method(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        self.seen.append(request)
        if self.error is not None:
            raise self.error
        return f"ok:{request}"


async def test_guarded_passes_results_through() -> None:
    context = FakeContext()
    ctx: Any = context
    servicer = Servicer(None)
    assert await servicer.Method("req", ctx) == "ok:req"
    assert servicer.seen == ["req"]
    assert context.calls == []
    assert Servicer.Method.__name__ == "Method"


async def test_guarded_aborts_with_the_error_status() -> None:
    context = FakeContext()
    ctx: Any = context
    servicer = Servicer(errors.NotFound("model 'x' not found"))
    with pytest.raises(Aborted):
        await servicer.Method("req", ctx)
    assert context.calls == [(grpc.StatusCode.NOT_FOUND, "model 'x' not found")]


async def test_guarded_hides_unexpected_errors(caplog: pytest.LogCaptureFixture) -> None:
    context = FakeContext()
    ctx: Any = context
    servicer = Servicer(KeyError("internal-detail"))
    with caplog.at_level(logging.ERROR, logger="volley.frontend"), pytest.raises(Aborted):
        await servicer.Method("req", ctx)
    ((code, details),) = context.calls
    assert code is grpc.StatusCode.INTERNAL
    assert "internal-detail" not in details
    assert "internal-detail" in caplog.text


async def test_guarded_does_not_swallow_cancellation() -> None:
    context = FakeContext()
    ctx: Any = context
    servicer = Servicer(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await servicer.Method("req", ctx)
    assert context.calls == []
