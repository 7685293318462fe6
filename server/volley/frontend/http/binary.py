"""Triton's binary tensor data extension: how request and response bodies are framed.

A request body is a JSON inference header, optionally followed by the raw bytes of the inputs
whose ``parameters`` carry ``binary_data_size``, in input order; the header's length is the
``Inference-Header-Content-Length`` request header. A response is framed the same way, its
binary outputs (``binary_data_size``) appended in output order.
"""

from __future__ import annotations

from volley.errors import InvalidArgument, Unimplemented

#: The header naming the length of the JSON part of a body (lower case, as servers give it).
HEADER_LENGTH = "inference-header-content-length"

_EMPTY = memoryview(b"")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes | memoryview, memoryview]:
    """The JSON part and the binary part of a request body (no copy of the binary part)."""
    if header_length is None:
        return body, _EMPTY
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidArgument(f"Unable to parse Inference-Header-Content-Length, got: '{text}'")
    length = int(text)
    size = len(body)
    if length > size:
        raise InvalidArgument(
            f"Inference-Header-Content-Length {length} is larger than the request body "
            f"({size} bytes)"
        )
    if length == 0:
        raise Unimplemented(
            "Inference-Header-Content-Length 0 (a body of raw input bytes without a JSON "
            "header) is not supported; send the JSON inference header first"
        )
    if length == size:
        return body, _EMPTY
    view = memoryview(body)
    return view[:length], view[length:]


class BinaryReader:
    """Hands out consecutive slices of a body's binary part, one per binary input."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int, name: str, model: str) -> memoryview:
        """The next ``size`` bytes, for input ``name``."""
        start = self._pos
        end = start + size
        available = len(self._data)
        if end > available:
            if available == 0:
                raise InvalidArgument(
                    f"input '{name}' has 'binary_data_size' {size} but the request carries no "
                    "binary data: send the JSON header's length in the "
                    "'Inference-Header-Content-Length' header and the input bytes after it"
                )
            raise InvalidArgument(
                f"unexpected size for input '{name}', expecting {end - available} additional "
                f"bytes for model '{model}'"
            )
        self._pos = end
        return self._data[start:end]

    def finish(self, model: str) -> None:
        """Check that every byte of the binary part was claimed by an input."""
        extra = len(self._data) - self._pos
        if extra:
            raise InvalidArgument(
                f"unexpected additional input data for model '{model}': {extra} bytes after "
                "the last binary input"
            )


def frame_response(header: bytes, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A response body and its framing headers: the JSON header, then the binary outputs."""
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join((header, *blobs)), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
