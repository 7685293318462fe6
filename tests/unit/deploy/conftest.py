"""Fixtures for the deployment tests: the chart renderer, schema validators, Volley's CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import referencing

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "volley"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

#: Kubernetes versions every object is validated against: the oldest supported (gRPC probes
#: are GA since 1.27) and a recent one. Their JSON schemas ship inside kubernetes-validate.
K8S_VERSIONS = ("1.27", "1.31")


def _load_renderer() -> ModuleType:
    path = DEPLOY / "helm" / "render_offline.py"
    spec = importlib.util.spec_from_file_location("volley_render_offline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def renderer() -> ModuleType:
    """deploy/helm/render_offline.py, the offline ``helm template``."""
    return _load_renderer()


@pytest.fixture(scope="session")
def render(renderer: ModuleType) -> Callable[..., list[dict[str, Any]]]:
    """Render the chart with value overrides into its Kubernetes objects."""

    def _render(*overrides: dict[str, Any], release: str = "volley") -> list[dict[str, Any]]:
        return list(renderer.manifests(renderer.render_chart(CHART, *overrides, release=release)))

    return _render


def _k8s_definitions(version: str) -> dict[str, Any]:
    import kubernetes_validate.utils as kv

    full = [v for v in kv.all_versions() if kv.major_minor(v) == version][-1]
    text = kv.schema_contents(
        f"kubernetes-json-schema/v{full}-local-strict/_definitions.json", version
    )
    return dict(text)


@pytest.fixture(scope="session")
def validate_k8s() -> Callable[[dict[str, Any]], None]:
    """Validate one object against the strict Kubernetes JSON schemas of K8S_VERSIONS."""
    import kubernetes_validate

    def _validate(obj: dict[str, Any]) -> None:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)

    return _validate


@pytest.fixture(scope="session")
def validate_crd() -> Callable[[dict[str, Any]], None]:
    """Validate a KServe object against the minimal schema in schemas/ for its kind.

    The schemas refer to Kubernetes' own definitions (Container, Volume, ObjectMeta, ...),
    resolved offline from the strict schemas of the newest of K8S_VERSIONS.
    """
    definitions = _k8s_definitions(K8S_VERSIONS[-1])
    registry: referencing.Registry = referencing.Registry().with_resource(
        definitions["$id"], referencing.Resource.from_contents(definitions)
    )
    schemas = {}
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        kind, group_version = path.stem.split(".", 1)
        schemas[(kind, group_version)] = schema

    def _validate(obj: dict[str, Any]) -> None:
        group, version = obj["apiVersion"].split("/")
        kind = obj["kind"].lower().removeprefix("cluster")
        schema = schemas.get((kind, f"{group}.{version}"))
        if schema is None:
            raise LookupError(f"no schema for {obj['kind']} {obj['apiVersion']}")
        jsonschema.Draft202012Validator(schema, registry=registry).validate(obj)

    return _validate


@pytest.fixture
def settings_from(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[list[str], dict[str, str]], Any]]:
    """The ServerSettings a ``volley serve`` command line and an environment produce.

    Parses the arguments with Volley's own CLI parser and reads VOLLEY_* from the given
    environment only, as ``volley serve`` does.
    """
    from volley.cli import build_parser
    from volley.settings import ServerSettings

    def _settings(argv: list[str], env: dict[str, str]) -> ServerSettings:
        for key in list(os.environ):
            if key.startswith("VOLLEY_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert argv[:2] == ["volley", "serve"], argv
        args = build_parser().parse_args(argv[1:])
        overrides = {
            name: getattr(args, name)
            for name in ServerSettings.model_fields
            if getattr(args, name, None) is not None
        }
        return ServerSettings(**overrides)

    yield _settings
