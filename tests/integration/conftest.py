"""Fixtures of the integration tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inproc import EXAMPLES


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A private copy of the bundled example repository."""
    target = tmp_path / "repo"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("*.py"))
    return target
