"""Triton's binary tensor extension framing and the body encodings: malformed input is a clear
400-class error, never a crash."""

from __future__ import annotations

import gzip
import zlib

import pytest

from volley.errors import InvalidArgument, Unimplemented
from volley.frontend.http import encoding
from volley.frontend.http.binary import BinaryReader, frame_response, split_body
from volley.frontend.http.boundary import BodyTooLarge


def test_no_header_length_means_the_whole_body_is_json() -> None:
    head, rest = split_body(b'{"inputs": []}', None)
    assert head == b'{"inputs": []}'
    assert len(rest) == 0


def test_header_length_splits_json_from_binary_without_copying() -> None:
    body = b'{"a":1}' + b"\x01\x02\x03"
    head, rest = split_body(body, "7")
    assert bytes(head) == b'{"a":1}'
    assert bytes(rest) == b"\x01\x02\x03"
    assert isinstance(rest, memoryview) and rest.obj is body


def test_header_length_equal_to_the_body_leaves_no_binary_part() -> None:
    head, rest = split_body(b"{}", " 2 ")
    assert head == b"{}" and len(rest) == 0


@pytest.mark.parametrize("value", ["", "abc", "-1", "1.5", "0x10", "١٢", "1e3"])
def test_unparsable_header_lengths_are_invalid(value: str) -> None:
    with pytest.raises(InvalidArgument, match="Unable to parse Inference-Header-Content-Length"):
        split_body(b"{}" * 10, value)


def test_header_length_beyond_the_body_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match=r"larger than the request body \(2 bytes\)"):
        split_body(b"{}", "3")


def test_header_length_zero_is_refused_as_unimplemented() -> None:
    with pytest.raises(Unimplemented, match="raw input bytes"):
        split_body(b"\x00" * 8, "0")


def test_reader_hands_out_consecutive_slices_and_checks_the_rest() -> None:
    reader = BinaryReader(memoryview(b"aabbbc"))
    assert bytes(reader.take(2, "x", "m")) == b"aa"
    assert bytes(reader.take(0, "empty", "m")) == b""
    assert bytes(reader.take(3, "y", "m")) == b"bbb"
    with pytest.raises(InvalidArgument, match="unexpected additional input data for model 'm'"):
        reader.finish("m")
    assert bytes(reader.take(1, "z", "m")) == b"c"
    reader.finish("m")


def test_reader_short_data_names_the_input_and_the_missing_bytes() -> None:
    reader = BinaryReader(memoryview(b"abc"))
    with pytest.raises(InvalidArgument, match="input 'x', expecting 2 additional bytes"):
        reader.take(5, "x", "m")


def test_binary_input_without_binary_part_names_the_header() -> None:
    with pytest.raises(InvalidArgument, match="Inference-Header-Content-Length"):
        BinaryReader(memoryview(b"")).take(4, "x", "m")


def test_frame_response_json_only_and_with_binary_outputs() -> None:
    body, headers = frame_response(b"{}", [])
    assert body == b"{}" and headers == {"content-type": "application/json"}
    body, headers = frame_response(b'{"o":1}', [b"ab", b"c"])
    assert body == b'{"o":1}abc'
    assert headers["inference-header-content-length"] == "7"
    assert headers["content-type"] == "application/octet-stream"


# -- encodings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "pack"), [("gzip", gzip.compress), ("deflate", zlib.compress)], ids=["gzip", "deflate"]
)
def test_decompress_round_trips(name: str, pack: object) -> None:
    data = b"x" * 1000
    assert encoding.decompress(pack(data), name, 10_000) == data  # type: ignore[operator]
    assert encoding.decompress(encoding.compress(data, name), name.upper(), 10_000) == data


def test_identity_and_empty_encodings_pass_through() -> None:
    assert encoding.decompress(b"raw", "identity", 10) == b"raw"
    assert encoding.decompress(b"raw", "", 10) == b"raw"


def test_decompression_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * 100_000)
    with pytest.raises(BodyTooLarge, match="limit of 1000 bytes"):
        encoding.decompress(bomb, "gzip", 1000)


def test_corrupt_and_truncated_compressed_bodies_are_invalid() -> None:
    with pytest.raises(InvalidArgument, match="not valid gzip data"):
        encoding.decompress(b"not gzip at all", "gzip", 1000)
    with pytest.raises(InvalidArgument, match="truncated deflate data"):
        encoding.decompress(zlib.compress(b"y" * 500)[:-6], "deflate", 1000)


def test_unknown_encoding_is_unimplemented() -> None:
    with pytest.raises(Unimplemented, match="unsupported Content-Encoding 'br'"):
        encoding.decompress(b"", "br", 10)


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("br", "identity"),
        ("gzip;q=0.5, deflate;q=0.8", "deflate"),
        ("gzip, deflate", "gzip"),
        ("identity;q=1, gzip;q=0.9", "identity"),
        ("gzip;q=abc, deflate;q=0.1", "deflate"),
        ("gzip;x=1", "identity"),
        (" , ;q=1", "identity"),
    ],
)
def test_accept_encoding_is_chosen_as_triton_does(header: str, chosen: str) -> None:
    assert encoding.accepted(header) == chosen
