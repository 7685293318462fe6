"""Serve ``HttpApi`` with granian's embedded server, on the event loop that runs everything else.

granian parses HTTP/1.1 (and h2c) and moves bytes on Rust threads outside the GIL; each
request's handler (RSGI, granian's own interface, cheaper than ASGI) runs as a task on the
running asyncio/uvloop loop, the loop the gRPC server and the batchers use, so an HTTP request
and a gRPC request meet in the same batch. ``bench/http_cost.py`` measures it against uvicorn,
aiohttp and granian's ASGI interface.

granian binds its listening socket itself, with ``SO_REUSEPORT``. To report the port it
serves when asked for port 0, and to fail clearly when the address is taken, the frontend
binds the address first (without ``SO_REUSEPORT``, so any listener already there is a
conflict), then lets granian join that port, and holds the unlistened socket until it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

from volley.errors import VolleyError
from volley.frontend.http.api import MAX_BODY_BYTES, HttpApi
from volley.frontend.http.boundary import BodyTooLarge
from volley.serving.service import InferenceService

log = logging.getLogger("volley.frontend")

#: Requests granian hands to Python at once per worker before it waits (its backpressure).
_CONCURRENCY = 1024


class _RsgiApp:
    """The RSGI application: the request's method, path, headers and body to ``HttpApi``."""

    __slots__ = ("_api",)

    def __init__(self, api: HttpApi) -> None:
        self._api = api

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        headers = scope.headers

        async def read(limit: int) -> bytes:
            length = headers.get("content-length")
            if length is not None:
                if length.isdigit() and int(length) > limit:
                    raise BodyTooLarge(_too_large(int(length), limit))
                return bytes(await proto())
            chunks: list[bytes] = []
            size = 0
            async for chunk in proto:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(_too_large(size, limit))
                chunks.append(chunk)
            return b"".join(chunks)

        reply = await self._api.handle(scope.method, scope.path, headers, read)
        proto.response_bytes(reply.status, list(reply.headers.items()), reply.body)


def _too_large(size: int, limit: int) -> str:
    return f"the request body ({size} bytes or more) exceeds the limit of {limit} bytes"


class HttpFrontend:
    """The KServe v2 REST transport over one ``InferenceService``."""

    def __init__(
        self,
        service: InferenceService,
        address: str = "0.0.0.0",
        port: int = 8000,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self._api = HttpApi(service, max_body)
        self._address = address
        self._requested_port = port
        self._holder: socket.socket | None = None
        self._server: Server | None = None
        self._task: asyncio.Future[None] | None = None
        #: The bound port (0 until started).
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        self.port = self._reserve()
        server = Server(
            _RsgiApp(self._api),
            address=self._address,
            port=self.port,
            interface=Interfaces.RSGI,
            http=HTTPModes.auto,
            websockets=False,
            log_enabled=False,
            backlog=_CONCURRENCY,
            backpressure=_CONCURRENCY,
        )
        task = asyncio.ensure_future(server.serve())
        # the worker binds and starts within a few loop iterations; surface a failure now
        for _ in range(5):
            await asyncio.sleep(0)
        if task.done():
            self._release()
            exc = task.exception()
            raise VolleyError(f"could not start the HTTP server on {self._where()}: {exc}")
        self._server, self._task = server, task
        log.info("serving HTTP on %s", self._where())
        return self.port

    def _where(self) -> str:
        host = f"[{self._address}]" if ":" in self._address else self._address
        return f"{host}:{self.port or self._requested_port}"

    def _reserve(self) -> int:
        family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        holder = socket.socket(family, socket.SOCK_STREAM)
        try:
            holder.bind((self._address, self._requested_port))
        except OSError as exc:
            holder.close()
            raise VolleyError(
                f"could not bind HTTP address {self._address}:{self._requested_port}: {exc}"
            ) from exc
        port: int = holder.getsockname()[1]
        if sys.platform == "linux":
            # granian joins the port with SO_REUSEPORT; the held socket never listens, so
            # it takes no connections
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._holder = holder
        else:
            holder.close()  # granian binds one plain socket elsewhere
        return port

    def _release(self) -> None:
        if self._holder is not None:
            self._holder.close()
            self._holder = None

    async def stop(self, grace: float) -> None:
        """Stop accepting connections and let in-flight requests finish within ``grace``."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.stop()  # type: ignore[no-untyped-call]
        try:
            await asyncio.wait_for(asyncio.shield(task), max(grace, 0.1))
        except asyncio.TimeoutError:
            log.warning("HTTP requests still in flight after %ss; closing", grace)
            for worker in list(server.wrks):
                worker.kill()  # type: ignore[no-untyped-call]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        finally:
            self._release()
