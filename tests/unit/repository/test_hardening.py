"""Configurations that must fail cleanly and fast: bombs, deep nesting, escapes, overflows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from volley.backends import BackendInspector
from volley.errors import ConfigError
from volley.repository import config_io
from volley.repository.loader import load_model_config

from onnx_models import identity, make_model_dir

BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def test_yaml_alias_bomb_is_refused_fast() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match="aliases"):
        config_io.parse_yaml(BOMB)
    assert time.monotonic() - started < 1


def test_deeply_nested_json_is_refused() -> None:
    deep = '{"parameters": ' * 100_000 + "1" + "}" * 100_000
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"nested too deeply|invalid"):
        config_io.parse_json(deep)
    assert time.monotonic() - started < 1


def test_oversized_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text("#" * (config_io.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        config_io.load_config_file(path)


def _load(tmp_path: Path, config: str) -> None:
    model_dir = make_model_dir(tmp_path, "m", identity(), config=config)
    load_model_config(model_dir, BackendInspector().read_signature)


def test_queue_delay_and_timeout_bounds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_queue_delay_microseconds"):
        _load(
            tmp_path,
            "max_batch_size: 4\ndynamic_batching { max_queue_delay_microseconds: 9223372036854775807 }",
        )
    with pytest.raises(ConfigError, match="default_timeout_microseconds"):
        _load(
            tmp_path / "b",
            "max_batch_size: 4\ndynamic_batching { default_queue_policy "
            "{ default_timeout_microseconds: 18446744073709551615 } }",
        )


def test_default_model_filename_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outside the version directory"):
        _load(tmp_path, 'backend: "onnxruntime"\ndefault_model_filename: "../../../etc/passwd"')
