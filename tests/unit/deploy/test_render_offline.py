"""The offline chart renderer renders its template subset as Helm does, and refuses the rest."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

CONTEXT: dict[str, Any] = {
    "Values": {
        "name": "volley",
        "port": 8001,
        "on": True,
        "off": False,
        "empty": "",
        "map": {"b": 2, "a": "x"},
        "list": ["one", "two"],
        "nested": {"flag": True, "text": "hi"},
    },
    "Release": {"Name": "rel", "Namespace": "ns", "Service": "Helm"},
    "Chart": {"Name": "volley", "Version": "0.1.0", "AppVersion": "0.1.0"},
}


@pytest.mark.parametrize(
    "template,expected",
    [
        ("name: {{ .Values.name }}", "name: volley"),
        ("port: {{ .Values.port | quote }}", 'port: "8001"'),
        ("{{ .Values.on }}/{{ .Values.off }}", "true/false"),
        ("{{ .Release.Name }}-{{ .Chart.Version }}", "rel-0.1.0"),
        # Trim markers eat every space and newline on their side, as in Go templates.
        ("a:\n  {{- .Values.name }}\n", "a:volley\n"),
        ("a: {{ .Values.name -}}\n\n  b", "a: volleyb"),
        ("x:\n  {{- toYaml .Values.map | nindent 2 }}", "x:\n  a: x\n  b: 2"),
        ("{{ toYaml .Values.list | indent 4 }}", "    - one\n    - two"),
        ("{{ .Values.empty | default .Chart.AppVersion }}", "0.1.0"),
        ('{{ .Values.name | default "other" }}', "volley"),
        ('{{ .Values.missing | default "fallback" }}', "fallback"),
        ("{{/* a comment */}}kept", "kept"),
        ('{{ "a|b" | quote }}', '"a|b"'),
    ],
)
def test_render(renderer: ModuleType, template: str, expected: str) -> None:
    assert renderer.render_string(template, CONTEXT) == expected


@pytest.mark.parametrize(
    "condition,expected",
    [
        (".Values.on", "yes"),
        (".Values.off", "no"),
        (".Values.empty", "no"),
        (".Values.missing", "no"),
        ("not .Values.on", "no"),
        ("and .Values.on .Values.nested.flag", "yes"),
        ("and .Values.on .Values.off", "no"),
        ("or .Values.off .Values.map", "yes"),
        (".Values.list", "yes"),
    ],
)
def test_if_else(renderer: ModuleType, condition: str, expected: str) -> None:
    template = f"{{{{- if {condition} }}}}\nyes\n{{{{- else }}}}\nno\n{{{{- end }}}}"
    assert renderer.render_string(template, CONTEXT).strip() == expected


def test_else_if_and_nesting(renderer: ModuleType) -> None:
    template = (
        "{{ if .Values.off }}1{{ else if .Values.empty }}2"
        "{{ else if .Values.on }}{{ if .Values.nested.flag }}3{{ end }}{{ else }}4{{ end }}"
    )
    assert renderer.render_string(template, CONTEXT) == "3"


@pytest.mark.parametrize(
    "template",
    [
        "{{ range .Values.list }}x{{ end }}",
        '{{ include "volley.labels" . }}',
        "{{ .Values.name | upper }}",
        "{{ .Values.missing }}",
        "{{ .Values.map }}",
        "{{ if .Values.on }}never closed",
        "{{ end }}",
        "{{ .Values.name }",
        '{{ define "x" }}{{ end }}',
        "{{ with .Values.map }}{{ .a }}{{ end }}",
    ],
)
def test_unsupported_or_broken_templates_are_errors(renderer: ModuleType, template: str) -> None:
    with pytest.raises(renderer.TemplateError):
        renderer.render_string(template, CONTEXT)


def test_merge_values_as_helm(renderer: ModuleType) -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1, "e": {"f": 1}}
    merged = renderer.merge_values(base, {"a": {"c": [3]}, "d": None, "e": {"g": 2}})
    assert merged == {"a": {"b": 1, "c": [3]}, "e": {"f": 1, "g": 2}}
    assert base["d"] == 1  # the base is not modified


def test_render_chart_skips_partials_and_notes(renderer: ModuleType, tmp_path: Path) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 1.0.0\n")
    (chart / "values.yaml").write_text("kind: ConfigMap\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: {{ .Values.kind }}\nmetadata:\n  name: {{ .Release.Name }}\n"
    )
    (chart / "templates" / "_helpers.tpl").write_text("{{ range }}")
    (chart / "templates" / "NOTES.txt").write_text("{{ nonsense }}")
    rendered = renderer.render_chart(chart, release="r")
    assert list(rendered) == ["templates/cm.yaml"]
    assert renderer.manifests(rendered) == [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "r"}}
    ]


def test_command_line(renderer: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    chart = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "volley"
    assert renderer.main([str(chart), "--release", "cli"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap"}
    assert all(d["metadata"]["name"].startswith("cli") for d in docs)
