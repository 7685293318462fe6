"""The gRPC server constructors: the native transport (pygrpc-native) and grpcio's ``grpc.aio``.

Both serve the same servicers through grpc.aio's API. The native server runs HTTP/2 and gRPC
framing on Rust threads outside the GIL and calls the same asyncio handlers on the same loop;
its bidirectional methods (``ModelStreamInfer``, reflection) are forwarded to an internal
grpc.aio server on a Unix socket.
"""

from __future__ import annotations

import asyncio
import enum
import importlib.util
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc

log = logging.getLogger("volley.frontend")

#: Seconds the native front is given to flush replies sent just before it closes.
_NATIVE_FLUSH_S = 0.1


class Transport(enum.Enum):
    """A gRPC server implementation."""

    NATIVE = "native"
    GRPCIO = "grpcio"


def native_available() -> bool:
    """True when pygrpc-native is installed."""
    return importlib.util.find_spec("pygrpc_native") is not None


def choose(
    requested: str, *, tls: bool = False, grpcio_only: Sequence[str] = ()
) -> tuple[Transport, str]:
    """The transport that serves ``requested`` (``auto``, ``native`` or ``grpcio``), and why.

    ``grpcio_only`` names the settings given that only grpcio can honour (connection limits).
    """
    if requested == "grpcio":
        return Transport.GRPCIO, "asked for with --grpc-transport grpcio"
    if tls:
        if requested == "native":
            raise ValueError(
                "--grpc-transport native cannot serve TLS: use grpcio or auto with TLS settings"
            )
        return Transport.GRPCIO, "TLS is configured and the native transport has no TLS"
    if grpcio_only:
        names = ", ".join(grpcio_only)
        if requested == "native":
            raise ValueError(f"--grpc-transport native cannot honour {names}: use grpcio or auto")
        return Transport.GRPCIO, f"{names} is set and only grpcio enforces it"
    if not native_available():
        if requested == "native":
            raise ValueError("--grpc-transport native needs the pygrpc-native package")
        return Transport.GRPCIO, "pygrpc-native is not installed"
    if requested == "native":
        return Transport.NATIVE, "asked for with --grpc-transport native"
    return Transport.NATIVE, "auto: the native transport can serve these settings"


def create_server(transport: Transport, options: Sequence[tuple[str, Any]]) -> grpc.aio.Server:
    """A not yet started server of ``transport`` with grpc.aio's ``options``."""
    if transport is Transport.GRPCIO:
        return grpc.aio.server(options=list(options))
    return _native_server_class()(options=list(options))


def _native_server_class() -> Callable[..., grpc.aio.Server]:
    import pygrpc_native.aio

    class NativeServer(pygrpc_native.aio.Server):  # type: ignore[misc]
        """pygrpc-native's server, with a graceful stop that loses no reply.

        Its ``stop`` closes the Rust side as soon as the handlers return, dropping replies
        that were answered moments before and not yet written to the socket. This waits for
        the handlers itself and gives the writer a moment to flush before the close.
        """

        async def stop(self, grace: float | None = None) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (grace or 0.0)
            calls = getattr(self, "_calls", {})
            tasks = [c.task for c in calls.values() if getattr(c, "task", None) is not None]
            if grace and tasks:
                await asyncio.wait(tasks, timeout=grace)
            await asyncio.sleep(_NATIVE_FLUSH_S)
            await super().stop(max(0.0, deadline - loop.time()))

    return NativeServer
