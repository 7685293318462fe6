"""Fixtures of the compat tests: a real server in a subprocess, clients we did not write."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from server_process import EXAMPLE_REPOSITORY, ServerProcess

if "volley._proto.inference.grpc_service_pb2" in sys.modules:
    raise RuntimeError("run tests/compat in its own pytest process (see Makefile: make test)")


@pytest.fixture(scope="session", params=("native", "grpcio"))
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """The example repository served on each gRPC transport in turn."""
    proc = ServerProcess(EXAMPLE_REPOSITORY, env={"VOLLEY_GRPC_TRANSPORT": str(request.param)})
    yield proc
    code = proc.stop()
    assert code == 0, f"server exited with {code}:\n{proc.log()}"
