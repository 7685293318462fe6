"""Fixtures of the integration tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inproc import EXAMPLES

TRANSPORTS = ("native", "grpcio")


@pytest.fixture(params=TRANSPORTS, autouse=True)
def grpc_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every integration test runs on both gRPC transports.

    The servers under test (in-process ``running_server`` and the ``ServerProcess``
    subprocess) read ``VOLLEY_GRPC_TRANSPORT`` like any other setting.
    """
    transport = str(request.param)
    monkeypatch.setenv("VOLLEY_GRPC_TRANSPORT", transport)
    return transport


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A private copy of the bundled example repository."""
    target = tmp_path / "repo"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("*.py"))
    return target
