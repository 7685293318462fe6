"""The v2 REST API as Triton routes it: one ``handle`` call per HTTP request, no server inside.

``HttpApi.handle`` takes the method, path, the few headers the protocol reads and a way to read
the body, and returns a ``Reply``; the server adapter (``server.py``) only moves bytes. Every
exception meets the one error boundary (``boundary.to_http``) in ``handle``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from volley.errors import InvalidArgument, NotFound, Unavailable, Unimplemented
from volley.frontend.http import binary, convert, encoding
from volley.frontend.http.boundary import to_http
from volley.serving.service import InferenceService

#: Largest request body accepted (after decompression too), in bytes.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Responses smaller than this are sent uncompressed even when the client accepts gzip or
#: deflate: compressing a few hundred bytes costs more server CPU (~60 µs) than it saves.
COMPRESS_MIN_BYTES = 1024

_monotonic_ns = time.monotonic_ns

#: Headers that carry a caller's W3C trace context.
_TRACE_KEYS = ("traceparent", "tracestate")

_MODEL = re.compile(
    r"/v2/models/([^/]+)(?:/versions/([^/]+))?"
    r"(?:/(infer|ready|config|stats|monitoring|traffic|generate|generate_stream|trace/setting))?"
)
_REPOSITORY = re.compile(r"/v2/repository(?:/([^/]+))?/(?:(index)|models/([^/]+)/(load|unload))")
_SHARED_MEMORY = re.compile(
    r"/v2/(systemsharedmemory|cudasharedmemory)(?:/region/([^/]+))?/(status|register|unregister)"
)

Headers = Mapping[str, str]
#: Reads the request body, at most ``limit`` bytes (raises ``BodyTooLarge`` beyond).
BodyReader = Callable[[int], Awaitable[bytes]]


@dataclass(slots=True)
class Reply:
    """An HTTP response: status, headers (lower-case names) and body."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(doc: Any, status: int = 200) -> Reply:
    """A JSON response."""
    return Reply(status, convert.dumps(doc), {"content-type": "application/json"})


def error_reply(status: int, message: str) -> Reply:
    """Triton's error body: ``{"error": "<message>"}``."""
    return json_reply({"error": message}, status)


_NOT_FOUND = error_reply(404, "Not Found")
_NOT_ALLOWED = error_reply(405, "Method Not Allowed")


class HttpApi:
    """Every v2 REST endpoint Volley serves, over one ``InferenceService``."""

    def __init__(self, service: InferenceService, max_body: int = MAX_BODY_BYTES) -> None:
        self._service = service
        self._max_body = max_body

    async def handle(self, method: str, path: str, headers: Headers, read: BodyReader) -> Reply:
        """Answer one request; never raises (except cancellation).

        ``path`` is percent-decoded, without the query; ``headers`` has lower-case names.
        """
        try:
            return await self._route(method, path, headers, read)
        except Exception as exc:
            status, message = to_http(exc)
            return error_reply(status, message)

    async def _route(self, method: str, path: str, headers: Headers, read: BodyReader) -> Reply:
        if path.startswith("/v2/models/"):
            if path == "/v2/models/stats":
                return self._stats("", "") if method == "GET" else _NOT_ALLOWED
            match = _MODEL.fullmatch(path)
            if match is not None:
                name, version, kind = match.groups()
                version = version or ""
                if kind == "infer":
                    if method != "POST":
                        return _NOT_ALLOWED
                    return await self._infer(name, version, headers, read)
                if kind == "trace/setting":
                    return await self._trace_setting(name, method, headers, read)
                return self._model_get(method, name, version, kind)
        elif path in ("/v2", "/v2/"):
            if method != "GET":
                return _NOT_ALLOWED
            return json_reply(convert.server_metadata_to_json(self._service.server_metadata()))
        elif path.startswith("/v2/health/"):
            if method != "GET":
                return _NOT_ALLOWED
            if path == "/v2/health/live":
                return Reply(200 if self._service.live else 400)
            if path == "/v2/health/ready":
                return Reply(200 if self._service.server_ready() else 400)
        elif path.startswith("/v2/repository"):
            match = _REPOSITORY.fullmatch(path)
            if match is not None:
                if method != "POST":
                    return _NOT_ALLOWED
                repository, index, name, action = match.groups()
                if repository:
                    raise Unimplemented("'repository_name' specification is not supported")
                return await self._repository(index, name or "", action, headers, read)
        elif (match := _SHARED_MEMORY.fullmatch(path)) is not None:
            kind, region, action = match.groups()
            if kind == "cudasharedmemory":
                return self._cuda_shared_memory(method, region or "", action)
            return await self._shared_memory(method, region or "", action, headers, read)
        elif path == "/v2/trace/setting":
            return await self._trace_setting("", method, headers, read)
        elif path == "/v2/logging":
            return await self._logging(method, headers, read)
        return _NOT_FOUND

    # -- models ---------------------------------------------------------------------------------
    def _model_get(self, method: str, name: str, version: str, kind: str | None) -> Reply:
        if kind in ("generate", "generate_stream"):
            raise Unimplemented("the generate extension is not supported by this server")
        if method != "GET":
            return _NOT_ALLOWED
        service = self._service
        if kind is None:
            meta = service.model_metadata(name, version)
            return json_reply(convert.model_metadata_to_json(meta))
        if kind == "ready":
            try:
                ready = service.model_ready(name, version)
            except (NotFound, Unavailable):
                ready = False
            return Reply(200) if ready else error_reply(400, "Model version not ready")
        if kind == "config":
            return json_reply(convert.config_to_json(service.model_config(name, version)))
        if kind == "monitoring":
            return json_reply(service.monitoring(name))
        if kind == "traffic":
            return json_reply(service.traffic(name))
        return self._stats(name, version)

    def _stats(self, name: str, version: str) -> Reply:
        stats = self._service.statistics(name, version)
        return json_reply({"model_stats": [convert.stats_to_json(s) for s in stats]})

    async def _infer(self, name: str, version: str, headers: Headers, read: BodyReader) -> Reply:
        arrival = _monotonic_ns()
        body = await self._body(headers, read)
        head, rest = binary.split_body(body, headers.get(binary.HEADER_LENGTH))
        doc = convert.loads(head)
        parsed = convert.request_from_json(doc, binary.BinaryReader(rest), name, version, arrival)
        service = self._service
        keys = service.header_keys
        if keys:  # request headers the service keeps (the audit log's allow-list)
            parsed.request.headers = {k: v for k in keys if (v := headers.get(k)) is not None}
        if service.tracing.enabled:
            req = parsed.request
            trace_headers = {k: v for k in _TRACE_KEYS if (v := headers.get(k)) is not None}
            req.trace = service.tracing.start(
                trace_headers, "POST /v2/models/{name}/infer", name, req.id, "http", arrival
            )
        response = await service.infer(parsed.request)
        header, blobs = convert.response_to_json(
            response, parsed.binary_default, parsed.binary_outputs
        )
        payload, reply_headers = binary.frame_response(header, blobs)
        accept = headers.get("accept-encoding")
        if accept and len(payload) >= COMPRESS_MIN_BYTES:
            chosen = encoding.accepted(accept)
            if chosen != "identity":
                payload = encoding.compress(payload, chosen)
                reply_headers["content-encoding"] = chosen
        return Reply(200, payload, reply_headers)

    async def _body(self, headers: Headers, read: BodyReader) -> bytes:
        body = await read(self._max_body)
        content_encoding = headers.get("content-encoding")
        if content_encoding:
            body = encoding.decompress(body, content_encoding, self._max_body)
        return body

    # -- shared memory ----------------------------------------------------------------------------
    def _cuda_shared_memory(self, method: str, region: str, action: str) -> Reply:
        """No CUDA region can be registered: status lists none, unregistering is a no-op."""
        if action == "status":
            if method != "GET":
                return _NOT_ALLOWED
            if region:
                raise NotFound(f"Unable to find cuda shared memory region: '{region}'")
            return json_reply([])
        if method != "POST":
            return _NOT_ALLOWED
        if action == "unregister":
            return Reply(200, b"", {"content-type": "application/json"})
        raise Unimplemented(
            "CUDA shared memory is not supported by this server; register system shared "
            "memory (/v2/systemsharedmemory/region/NAME/register) instead"
        )

    async def _shared_memory(
        self, method: str, region: str, action: str, headers: Headers, read: BodyReader
    ) -> Reply:
        shm = self._service.shm
        if action == "status":
            if method != "GET":
                return _NOT_ALLOWED
            return json_reply(
                [
                    {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                    for r in shm.status(region)
                ]
            )
        if method != "POST":
            return _NOT_ALLOWED
        if action == "unregister":
            shm.unregister(region)
            return Reply(200, b"", {"content-type": "application/json"})
        if not region:
            return _NOT_FOUND
        doc = await self._settings_body(method, headers, read)
        key, offset, size = doc.get("key"), doc.get("offset", 0), doc.get("byte_size")
        if type(key) is not str:
            raise InvalidArgument("shared memory registration needs 'key', a string")
        if type(offset) is not int or type(size) is not int:
            raise InvalidArgument("shared memory 'offset' and 'byte_size' must be integers")
        shm.register(region, key, offset, size)
        return Reply(200, b"", {"content-type": "application/json"})

    # -- trace and log settings -------------------------------------------------------------------
    async def _settings_body(self, method: str, headers: Headers, read: BodyReader) -> Any:
        if method == "GET":
            return None
        body = await self._body(headers, read)
        doc = convert.loads(body) if body.strip() else {}
        if type(doc) is not dict:
            raise InvalidArgument("the request body must be a JSON object")
        return doc

    async def _trace_setting(
        self, model: str, method: str, headers: Headers, read: BodyReader
    ) -> Reply:
        if method not in ("GET", "POST"):
            return _NOT_ALLOWED
        doc = await self._settings_body(method, headers, read)
        changes: dict[str, list[str] | None] | None = None
        if doc:
            changes = {}
            for key, value in doc.items():
                if value is None:
                    changes[key] = None
                elif type(value) is list and all(type(v) is str for v in value):
                    changes[key] = value
                elif type(value) is str:
                    changes[key] = [value]
                else:
                    raise InvalidArgument(
                        f"trace setting '{key}' must be a string, a list of strings or null"
                    )
        settings = self._service.trace_settings(model, changes)
        return json_reply({k: v if k == "trace_level" else v[0] for k, v in settings.items()})

    async def _logging(self, method: str, headers: Headers, read: BodyReader) -> Reply:
        if method not in ("GET", "POST"):
            return _NOT_ALLOWED
        doc = await self._settings_body(method, headers, read)
        return json_reply(self._service.log_settings(doc or None))

    # -- repository -------------------------------------------------------------------------------
    async def _repository(
        self, index: str | None, name: str, action: str | None, headers: Headers, read: BodyReader
    ) -> Reply:
        body = await self._body(headers, read)
        doc = convert.loads(body) if body.strip() else {}
        if type(doc) is not dict:
            raise InvalidArgument("the request body must be a JSON object")
        if index:
            ready = doc.get("ready", False)
            if type(ready) is not bool:
                raise InvalidArgument("Invalid value for 'ready': expected a boolean")
            rows = self._service.repository_index(ready)
            return json_reply(convert.index_to_json(rows))
        params = doc.get("parameters") or {}
        if type(params) is not dict:
            raise InvalidArgument("Unable to parse 'parameters': expected a JSON object")
        if action == "load":
            for key, value in params.items():
                if type(value) is not str:
                    raise InvalidArgument(f"load parameter '{key}' must be a string")
            await self._service.load(name, params)
        else:
            dependents = params.get("unload_dependents", False)
            if type(dependents) is not bool:
                raise InvalidArgument("Unable to parse 'unload_dependents': expected a boolean")
            await self._service.unload(name)
        return Reply(200, b"", {"content-type": "application/json"})
