"""Reading and writing a model's configuration file (``config.pbtxt`` / ``.yaml`` / ``.json``).

``config.pbtxt`` is protobuf text format; ``config.yaml`` and ``config.json`` use the protobuf
JSON mapping with the proto's own field names (``max_batch_size``). A model directory holds at
most one of them; none means an empty configuration that auto-complete fills in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import yaml
from google.protobuf import json_format, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError

#: Configuration file names a model directory may hold (at most one of them).
CONFIG_FILENAMES: Final[tuple[str, ...]] = ("config.pbtxt", "config.yaml", "config.json")

_INT64_TYPES: Final[frozenset[int]] = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)

_PBTXT_HINT = (
    "fix the protobuf text format: 'field: value', sub-messages 'field { ... }', "
    "lists 'dims: [ 3, 224 ]', enums as bare names (TYPE_FP32); field names are Triton's"
)
_MAPPING_HINT = (
    "use the ModelConfig field names as in the proto (e.g. 'max_batch_size', 'data_type: "
    "TYPE_FP32', 'dims: [3, 224]'); nested messages are mappings, repeated fields are lists"
)


def find_config_file(model_dir: Path) -> Path | None:
    """Return the model's configuration file, or None when it has none.

    Raises ``ConfigError`` when more than one of ``CONFIG_FILENAMES`` exists.
    """
    found = [model_dir / name for name in CONFIG_FILENAMES if (model_dir / name).is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(
            f"model directory holds several configuration files: {names}",
            path=str(found[0]),
            hint="keep exactly one of config.pbtxt, config.yaml, config.json",
        )
    return found[0] if found else None


def read_config(model_dir: Path) -> tuple[mc.ModelConfig, Path | None]:
    """Read the configuration of the model in ``model_dir``.

    Returns the parsed configuration and the file it came from; an empty configuration and
    None when the directory holds no configuration file.
    """
    path = find_config_file(model_dir)
    if path is None:
        return mc.ModelConfig(), None
    return load_config_file(path), path


#: The largest configuration file read (a model configuration is a few KiB).
MAX_CONFIG_BYTES = 1024 * 1024


def load_config_file(path: Path) -> mc.ModelConfig:
    """Parse one configuration file; the format follows its suffix."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"configuration file is larger than {MAX_CONFIG_BYTES // 1024} KiB",
                path=str(path),
                hint="a model configuration is a few KiB; check that this is the right file",
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read configuration file: {exc}",
            path=str(path),
            hint="make the file readable UTF-8 text",
        ) from exc
    suffix = path.suffix.lower()
    if suffix == ".pbtxt":
        return parse_pbtxt(text, path=str(path))
    if suffix in (".yaml", ".yml"):
        return parse_yaml(text, path=str(path))
    if suffix == ".json":
        return parse_json(text, path=str(path))
    raise ConfigError(
        f"unknown configuration file type '{path.suffix}'",
        path=str(path),
        hint="name the file config.pbtxt, config.yaml or config.json",
    )


def parse_pbtxt(text: str, *, path: str = "<config>") -> mc.ModelConfig:
    """Parse protobuf text format (Triton's ``config.pbtxt`` syntax) into a ``ModelConfig``."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        if line is not None:
            prefix = f"{line}:{column} : "
            detail = detail.removeprefix(prefix)
            where = f"line {line}, column {column}" if column is not None else f"line {line}"
            message = f"invalid config.pbtxt at {where}: {detail}"
        else:
            message = f"invalid config.pbtxt: {detail}"
        raise ConfigError(message, path=path, hint=_PBTXT_HINT) from exc
    return config


def parse_yaml(text: str, *, path: str = "<config>") -> mc.ModelConfig:
    """Parse a YAML document with the ``ModelConfig`` schema."""
    return parse_mapping(safe_yaml(text, path=path), path=path)


def safe_yaml(text: str, *, path: str) -> object:
    """A YAML document's data (anchors and aliases refused: a few lines of aliases can expand
    into billions of nodes)."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(
                    "YAML aliases (*name) are not accepted here",
                    path=path,
                    hint="write the values out in full",
                )
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(
            f"invalid YAML{where}: {problem}", path=path, hint="fix the YAML syntax"
        ) from exc
    return data


def parse_json(text: str, *, path: str = "<config>") -> mc.ModelConfig:
    """Parse a JSON document with the ``ModelConfig`` schema."""
    try:
        data = json.loads(text) if text.strip() else None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            path=path,
            hint="fix the JSON syntax",
        ) from exc
    except RecursionError as exc:
        raise ConfigError(
            "JSON nested too deeply", path=path, hint="a model configuration is a few levels deep"
        ) from exc
    return parse_mapping(data, path=path)


def parse_mapping(data: object, *, path: str = "<config>") -> mc.ModelConfig:
    """Build a ``ModelConfig`` from a decoded JSON/YAML document (None = empty config).

    64-bit integers may be numbers or strings, map keys may be numbers or strings.
    """
    config = mc.ModelConfig()
    if data is None:
        return config
    if not isinstance(data, dict):
        raise ConfigError(
            f"configuration must be a mapping of field names, got {type(data).__name__}",
            path=path,
            hint=_MAPPING_HINT,
        )
    try:
        json_format.ParseDict(_string_keys(data), config)
    except RecursionError as exc:
        raise ConfigError("configuration nested too deeply", path=path, hint=_MAPPING_HINT) from exc
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"invalid configuration: {exc}", path=path, hint=_MAPPING_HINT) from exc
    return config


def to_pbtxt(config: mc.ModelConfig) -> str:
    """Render a configuration as ``config.pbtxt`` text."""
    return str(text_format.MessageToString(config))


def to_json(config: mc.ModelConfig) -> dict[str, Any]:
    """Render a configuration as Triton does over JSON: proto field names, int64 as numbers."""
    data: dict[str, Any] = json_format.MessageToDict(config, preserving_proto_field_name=True)
    _int64_to_numbers(config.DESCRIPTOR, data)
    return data


def write_config(config: mc.ModelConfig, path: Path) -> None:
    """Write ``config`` to ``path`` in the format its suffix names (.pbtxt, .yaml, .json)."""
    suffix = path.suffix.lower()
    if suffix == ".pbtxt":
        text = to_pbtxt(config)
    elif suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(to_json(config), sort_keys=False)
    elif suffix == ".json":
        text = json.dumps(to_json(config), indent=2) + "\n"
    else:
        raise ConfigError(
            f"unknown configuration file type '{path.suffix}'",
            path=str(path),
            hint="use a .pbtxt, .yaml or .json file name",
        )
    path.write_text(text, encoding="utf-8")


def _string_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def _int64_to_numbers(descriptor: Descriptor, data: dict[str, Any]) -> None:
    for name, value in data.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            value_field = message_type.fields_by_name["value"]
            for key in value:
                value[key] = _convert(value_field, value[key])
        elif field.is_repeated:
            data[name] = [_convert(field, item) for item in value]
        else:
            data[name] = _convert(field, value)


def _convert(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        _int64_to_numbers(field.message_type, value)
        return value
    if field.type in _INT64_TYPES:
        return int(value)
    return value
