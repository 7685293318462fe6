"""Content encodings of bodies as Triton handles them: gzip and deflate, both directions."""

from __future__ import annotations

import zlib

from volley.errors import InvalidArgument, Unimplemented
from volley.frontend.http.boundary import BodyTooLarge

#: zlib window bits of each encoding Triton accepts ("deflate" is the zlib format).
_WBITS = {"gzip": 31, "deflate": 15}


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded from ``Content-Encoding: encoding``, refusing more than ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise Unimplemented(
            f"unsupported Content-Encoding '{encoding}' (supported: gzip, deflate, identity)"
        )
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidArgument(f"the request body is not valid {encoding} data: {exc}") from exc
    if len(out) > limit:
        raise BodyTooLarge(f"the decompressed request body exceeds the limit of {limit} bytes")
    if not decoder.eof:
        raise InvalidArgument(f"the request body is truncated {encoding} data")
    return out


def accepted(accept_encoding: str) -> str:
    """The encoding to answer with for an ``Accept-Encoding`` header, as Triton picks it:
    the highest-weighted of gzip, deflate and identity (``identity`` when none is named)."""
    best, weight = "identity", 0.0
    for item in accept_encoding.split(","):
        name, _, q = item.strip().partition(";")
        name = name.strip().lower()
        w = 1.0
        if q:
            key, _, value = q.strip().partition("=")
            if key.strip() != "q":
                continue
            try:
                w = float(value)
            except ValueError:
                continue
        if name in ("identity", "gzip", "deflate") and w > weight:
            best, weight = name, w
    return best


def compress(body: bytes, encoding: str) -> bytes:
    """``body`` in ``gzip`` or ``deflate`` encoding."""
    encoder = zlib.compressobj(wbits=_WBITS[encoding])
    return encoder.compress(body) + encoder.flush()
