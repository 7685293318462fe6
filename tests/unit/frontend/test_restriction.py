"""Parsing and checking ``--grpc-restricted-protocol``."""

from __future__ import annotations

import pytest

from volley.errors import Unavailable
from volley.frontend.grpc import restriction


class Ctx:
    def __init__(self, *metadata: tuple[str, str]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_parse_groups_key_and_value() -> None:
    parsed = restriction.parse(["model-repository,shared-memory:Admin-Key=a=b", "health:k=v"])
    assert parsed == {
        "model-repository": ("triton-grpc-protocol-admin-key", "a=b"),
        "shared-memory": ("triton-grpc-protocol-admin-key", "a=b"),
        "health": ("triton-grpc-protocol-k", "v"),
    }


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("model-repository", "expected '<groups>:<key>=<value>'"),
        ("model-repository:key", "expected"),
        (":k=v", "expected"),
        ("everything:k=v", "unknown group 'everything'"),
    ],
)
def test_malformed_specs_are_refused(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        restriction.parse([spec])


def test_a_group_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        restriction.parse(["health:a=1", "health:b=2"])


def test_check_needs_the_exact_header_and_value() -> None:
    restricted = restriction.parse(["inference:key=secret"])
    restriction.check(restricted, "metadata", Ctx())
    restriction.check(restricted, "inference", Ctx(("triton-grpc-protocol-key", "secret")))
    for ctx in (Ctx(), Ctx(("triton-grpc-protocol-key", "nope")), Ctx(("key", "secret"))):
        with pytest.raises(Unavailable, match="expecting header 'triton-grpc-protocol-key'"):
            restriction.check(restricted, "inference", ctx)
