"""Render the Volley chart without a helm binary: ``helm template`` for a small subset.

The chart's templates keep to a small part of Helm's template language so that this file can
render them exactly as ``helm template`` does, offline, where no helm binary is installed (the
tests use it; ``helm template`` is compared with it where helm is installed). What it knows:

- actions ``{{ PIPELINE }}`` with Go's whitespace trimming (``{{-`` and ``-}}``) and comments
  ``{{/* ... */}}``;
- ``{{ if PIPELINE }}`` / ``{{ else if PIPELINE }}`` / ``{{ else }}`` / ``{{ end }}``;
- terms ``.Values.a.b``, ``.Release.Name``, ``.Release.Namespace``, ``.Release.Service``,
  ``.Chart.Name``, ``.Chart.Version``, ``.Chart.AppVersion``, "strings", integers, true/false;
- functions ``quote``, ``toYaml``, ``nindent N``, ``indent N``, ``default X``, ``not``, ``and``,
  ``or``, chained with ``|`` (the piped value is the last argument, as in Go templates).

Anything else (``range``, ``with``, ``include``, ``define``, other functions) is an error, not
silently misrendered; so is a ``.Values`` path that does not exist outside ``if``/``default``
(Helm would print nothing; here it is a typo until proven otherwise). Values are merged as Helm
merges them (maps deeply, lists replaced, ``null`` deletes a key) and checked against the chart's
``values.schema.json`` as Helm checks them.

    python deploy/helm/render_offline.py deploy/helm/volley [--release NAME] [-f values.yaml]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: One action; group 1 is the left trim marker, 2 the body, 3 the right trim marker.
_ACTION = re.compile(r"\{\{(-[ \t\r\n])?(.*?)([ \t\r\n]-)?\}\}", re.S)
_WHITESPACE = " \t\r\n"
_MISSING = object()


class TemplateError(ValueError):
    """A template uses something this renderer does not support, or is malformed."""


@dataclass
class _Text:
    text: str


@dataclass
class _Output:
    pipeline: str


@dataclass
class _If:
    branches: list[tuple[str, list[Any]]] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


def _tokens(source: str) -> list[tuple[str, str]]:
    """Text and action tokens, with Go's trim markers applied to the neighbouring text."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip(_WHITESPACE)
        if match.group(1):
            text = text.rstrip(_WHITESPACE)
        out.append(("text", text))
        out.append(("action", match.group(2).strip()))
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = source[pos:]
    out.append(("text", tail.lstrip(_WHITESPACE) if trim_next else tail))
    if "{{" in "".join(t for kind, t in out if kind == "text"):
        raise TemplateError("unbalanced '{{' in template")
    return out


def _parse(tokens: list[tuple[str, str]]) -> list[Any]:
    """Tokens -> a tree of _Text, _Output and _If nodes."""
    root: list[Any] = []
    stack: list[tuple[_If, list[Any]]] = []
    body = root
    for kind, value in tokens:
        if kind == "text":
            if value:
                body.append(_Text(value))
            continue
        if value.startswith("/*"):
            if not value.endswith("*/"):
                raise TemplateError(f"unterminated comment: {value!r}")
            continue
        word, _, rest = value.partition(" ")
        rest = rest.strip()
        if word == "if":
            node = _If(branches=[(rest, [])])
            body.append(node)
            stack.append((node, body))
            body = node.branches[-1][1]
        elif word == "else":
            if not stack:
                raise TemplateError("'else' outside 'if'")
            node = stack[-1][0]
            if rest.startswith("if "):
                node.branches.append((rest[3:].strip(), []))
                body = node.branches[-1][1]
            elif rest:
                raise TemplateError(f"unsupported action: {{{{ {value} }}}}")
            else:
                body = node.otherwise
        elif word == "end":
            if not stack:
                raise TemplateError("'end' without 'if'")
            body = stack.pop()[1]
        elif word in ("range", "with", "define", "template", "block", "include", "tpl"):
            raise TemplateError(f"'{word}' is not supported by the offline renderer")
        else:
            body.append(_Output(value))
    if stack:
        raise TemplateError("'if' without 'end'")
    return root


_LEXEME = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\||[^\s"|]+)')


def _commands(pipeline: str) -> list[list[str]]:
    """Split a pipeline into commands and each command into terms ("strings" stay whole)."""
    commands: list[list[str]] = [[]]
    pos = 0
    while pipeline[pos:].strip():
        match = _LEXEME.match(pipeline, pos)
        if match is None:
            raise TemplateError(f"cannot parse {pipeline!r}")
        if match.group(1) == "|":
            commands.append([])
        else:
            commands[-1].append(match.group(1))
        pos = match.end()
    if any(not command for command in commands):
        raise TemplateError(f"empty command in {pipeline!r}")
    return commands


def _truthy(value: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings, lists and maps are false."""
    return value not in (None, False, 0, "") and value != [] and value != {}


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        raise TemplateError("a map or list is printed directly: use toYaml")
    return str(value)


def _to_yaml(value: Any) -> str:
    """Helm's toYaml: keys sorted, block style, no trailing newline."""
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, width=1 << 16)
    return text.removesuffix("...\n").rstrip("\n")


def _indent(width: Any, text: Any) -> str:
    pad = " " * int(width)
    return pad + str(text).replace("\n", "\n" + pad)


_FUNCTIONS: dict[str, Any] = {
    "quote": lambda *args: " ".join(
        json.dumps(_to_string(a), ensure_ascii=False) for a in args if a is not None
    ),
    "toYaml": _to_yaml,
    "indent": _indent,
    "nindent": lambda width, text: "\n" + _indent(width, text),
    "default": lambda fallback, value=None: value if _truthy(value) else fallback,
    "not": lambda value: not _truthy(value),
    "and": lambda *args: next((a for a in args if not _truthy(a)), args[-1]),
    "or": lambda *args: next((a for a in args if _truthy(a)), args[-1]),
}


class _Renderer:
    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context

    def term(self, word: str, lenient: bool) -> Any:
        if word.startswith('"'):
            return json.loads(word)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        if word == ".":
            return self.context
        if not word.startswith("."):
            raise TemplateError(f"unsupported term or function {word!r}")
        value: Any = self.context
        for part in word[1:].split("."):
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING:
                if lenient and word.startswith(".Values."):
                    return None
                raise TemplateError(f"{word} is not defined")
        return value

    def pipeline(self, text: str, lenient: bool = False) -> Any:
        commands = _commands(text)
        # As in Helm, a missing value is nil (not an error) where a function gives it meaning.
        lenient = lenient or any(c[0] in ("default", "not", "and", "or") for c in commands)
        value: Any = _MISSING
        for name, *args in commands:
            if name in _FUNCTIONS:
                values = [self.term(a, lenient) for a in args]
                if value is not _MISSING:
                    values.append(value)
                try:
                    value = _FUNCTIONS[name](*values)
                except TypeError as exc:
                    raise TemplateError(f"wrong arguments to {name} in {text!r}") from exc
            elif args or value is not _MISSING:
                raise TemplateError(f"unsupported function {name!r} in {text!r}")
            else:
                value = self.term(name, lenient)
        return value

    def render(self, nodes: list[Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Output):
                out.append(_to_string(self.pipeline(node.pipeline)))
            else:
                for condition, body in node.branches:
                    if _truthy(self.pipeline(condition, lenient=True)):
                        out.append(self.render(body))
                        break
                else:
                    out.append(self.render(node.otherwise))
        return "".join(out)


def render_string(source: str, context: dict[str, Any]) -> str:
    """Render one template against a context such as ``{"Values": {...}, "Release": {...}}``."""
    return _Renderer(context).render(_parse(_tokens(source)))


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge: maps merge deeply, anything else replaces, ``None`` deletes the key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_values(chart: Path, *overrides: dict[str, Any]) -> dict[str, Any]:
    """The chart's values.yaml merged with the overrides, checked against values.schema.json."""
    values = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    for override in overrides:
        values = merge_values(values, override)
    schema_file = chart / "values.schema.json"
    if schema_file.exists():
        import jsonschema

        jsonschema.validate(values, json.loads(schema_file.read_text()))
    return values


def render_chart(
    chart: Path,
    *overrides: dict[str, Any],
    release: str = "volley",
    namespace: str = "default",
) -> dict[str, str]:
    """``helm template``: each manifest template's path (relative to the chart) -> its text."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    context = {
        "Values": chart_values(chart, *overrides),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {
            "Name": meta["name"],
            "Version": meta["version"],
            "AppVersion": meta.get("appVersion", ""),
        },
    }
    rendered = {}
    for path in sorted((chart / "templates").rglob("*")):
        if not path.is_file() or path.name.startswith("_") or path.name == "NOTES.txt":
            continue
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        try:
            rendered[str(path.relative_to(chart))] = render_string(path.read_text(), context)
        except TemplateError as exc:
            raise TemplateError(f"{path.relative_to(chart)}: {exc}") from exc
    return rendered


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of rendered templates (empty documents dropped)."""
    objects = []
    for text in rendered.values():
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("--release", default="volley")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("-f", "--values", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    overrides = [yaml.safe_load(p.read_text()) or {} for p in args.values]
    rendered = render_chart(args.chart, *overrides, release=args.release, namespace=args.namespace)
    chart_name = yaml.safe_load((args.chart / "Chart.yaml").read_text())["name"]
    for name, text in rendered.items():
        if text.strip():
            sys.stdout.write(f"---\n# Source: {chart_name}/{name}\n{text.strip(chr(10))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
