"""Settings come from VOLLEY_* environment variables; command-line flags override them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from volley import cli
from volley.settings import ControlMode, ServerSettings


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLLEY_GRPC_PORT", "9001")
    monkeypatch.setenv("VOLLEY_MODEL_CONTROL_MODE", "explicit")
    monkeypatch.setenv("VOLLEY_MODEL_REPOSITORY", '["/models/a", "/models/b"]')
    from_env = ServerSettings()
    assert from_env.grpc_port == 9001
    assert from_env.model_control_mode is ControlMode.EXPLICIT
    assert from_env.model_repository == [Path("/models/a"), Path("/models/b")]
    args = cli.build_parser().parse_args(
        ["serve", "--grpc-port", "9100", "--exit-timeout-secs", "3"]
    )
    merged = cli._settings(args)
    assert merged.grpc_port == 9100 and merged.exit_timeout_secs == 3.0
    assert merged.model_control_mode is ControlMode.EXPLICIT  # not overridden: env stays


def test_invalid_settings_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLLEY_GRPC_PORT", "70000")
    with pytest.raises(ValidationError, match="grpc_port"):
        ServerSettings()


def test_serve_with_bad_settings_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOLLEY_EXIT_TIMEOUT_SECS", "-1")
    assert cli.main(["serve", "--model-repository", "model_repository"]) == 2
    assert "invalid settings" in capsys.readouterr().err


def test_unknown_control_mode_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--model-control-mode", "sometimes"])
    assert exited.value.code == 2
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_load_model_requires_explicit_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--load-model", "simple"]) == 2
    assert "--model-control-mode explicit" in capsys.readouterr().err


def test_readme_settings_table_is_generated_from_the_settings() -> None:
    from volley.settings import settings_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("<!-- settings-table")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- /settings-table -->")
    assert readme[start:end] == settings_table(), (
        "README's settings table is stale: paste volley.settings.settings_table() into it"
    )


def test_every_setting_is_a_serve_flag() -> None:
    parser = cli.build_parser()
    serve = next(
        a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("serve")
    )
    flags = {s for action in serve._actions for s in action.option_strings}
    for name in ServerSettings.model_fields:
        assert "--" + name.replace("_", "-") in flags
