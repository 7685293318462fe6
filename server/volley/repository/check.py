"""``volley repo check``: find every problem in a model repository in one run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from volley.errors import ConfigError
from volley.model.signature import ModelIO
from volley.repository import layout
from volley.repository.loader import LoadedConfig, load_model_config


class ModelInspector(Protocol):
    """What the check asks of the backends: a file's signature, and whether it opens."""

    def read_signature(self, backend: str, model_file: Path) -> ModelIO | None:
        """The file's input/output signature, or None when the backend cannot read one."""
        ...

    def verify(self, backend: str, model_file: Path) -> None:
        """Raise ``ConfigError`` when the backend cannot open ``model_file``."""
        ...


@dataclass(frozen=True)
class Problem:
    """One problem found in a repository: which model, which file, what and how to fix."""

    model: str
    path: str
    message: str
    hint: str


def check_repository(path: Path, inspector: ModelInspector, *, gpu_count: int = 0) -> list[Problem]:
    """Load every model of the repository at ``path`` and collect all problems found.

    Each model's configuration is loaded as the server would, and each selected model file
    is opened by its backend (``inspector.verify``). An empty list means the repository is fine.
    """
    try:
        models = layout.list_models(path)
    except ConfigError as exc:
        return [Problem(model="", path=exc.path or str(path), message=exc.message, hint=exc.hint)]
    problems: list[Problem] = []
    for name, model_dir in models.items():
        try:
            loaded = load_model_config(model_dir, inspector.read_signature, gpu_count=gpu_count)
        except ConfigError as exc:
            problems.append(_from_error(name, model_dir, exc))
            continue
        except Exception as exc:
            problems.append(
                Problem(
                    model=name,
                    path=str(model_dir),
                    message=f"unexpected error while loading: {exc}",
                    hint="check the model directory's files and permissions",
                )
            )
            continue
        problems.extend(_verify_files(name, loaded, inspector))
    return problems


def format_problems(problems: Iterable[Problem]) -> str:
    """One block per problem: ``path: message`` then an indented ``hint:`` line."""
    blocks = []
    for problem in problems:
        block = f"{problem.path}: {problem.message}"
        if problem.hint:
            block += f"\n  hint: {problem.hint}"
        blocks.append(block)
    return "\n".join(blocks)


def _from_error(model: str, model_dir: Path, exc: ConfigError) -> Problem:
    return Problem(
        model=model,
        path=exc.path or str(model_dir),
        message=exc.message,
        hint=exc.hint or "see the model configuration spec",
    )


def _verify_files(model: str, loaded: LoadedConfig, inspector: ModelInspector) -> list[Problem]:
    if loaded.spec.ensemble is not None:
        return []  # no model file; its Python steps are imported only when it loads
    problems = []
    for version, model_file in loaded.versions.items():
        try:
            inspector.verify(loaded.config.backend, model_file)
        except ConfigError as exc:
            problems.append(
                Problem(
                    model=model,
                    path=exc.path or str(model_file),
                    message=f"version {version}: {exc.message}",
                    hint=exc.hint,
                )
            )
    return problems
