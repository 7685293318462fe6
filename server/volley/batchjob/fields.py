"""Which column feeds which model input, and which outputs a job writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from volley.batchjob.errors import BatchError
from volley.serving.types import TensorMetadata

#: The output column holding each row's index in the input.
ROW_COLUMN = "row"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a job needs to know about the model it runs."""

    name: str
    versions: list[str]
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    #: 0 when the model does not batch, or the server did not say.
    max_batch_size: int


@dataclass(frozen=True, slots=True)
class Field:
    """One model input and the input column that feeds it."""

    input: str
    column: str
    datatype: str
    #: The shape of one row (the input's shape after its first, row, dimension); -1 = any.
    row_shape: tuple[int, ...]

    @property
    def scalar(self) -> bool:
        """True when one row is one value (a plain column), not a list."""
        return self.row_shape in ((), (1,))


def parse_mapping(items: Iterable[str]) -> dict[str, str]:
    """``COLUMN=INPUT`` items (``--map``) as {column: input}."""
    mapping: dict[str, str] = {}
    for item in items:
        column, sep, name = item.rpartition("=")
        if not sep or not column or not name:
            raise BatchError(f"--map '{item}': expected COLUMN=INPUT")
        if column in mapping:
            raise BatchError(f"--map: column '{column}' is mapped twice")
        mapping[column] = name
    return mapping


def plan_fields(
    columns: Sequence[str], inputs: Sequence[TensorMetadata], mapping: Mapping[str, str]
) -> list[Field]:
    """The column of every model input: ``mapping`` first, then a column named like the input,
    then, for a model with one input and an input with one column, that column."""
    by_name = {t.name: t for t in inputs}
    chosen: dict[str, str] = {}
    for column, name in mapping.items():
        if name not in by_name:
            raise BatchError(
                f"--map {column}={name}: the model has no input '{name}' "
                f"(its inputs: {', '.join(by_name)})"
            )
        if column not in columns:
            raise BatchError(
                f"--map {column}={name}: the input has no column '{column}' "
                f"(its columns: {', '.join(columns)})"
            )
        if name in chosen:
            raise BatchError(f"--map: input '{name}' is fed by two columns")
        chosen[name] = column
    for t in inputs:
        if t.name not in chosen and t.name in columns and t.name not in mapping:
            chosen[t.name] = t.name
    if len(inputs) == 1 and len(columns) == 1 and not chosen:
        chosen[inputs[0].name] = columns[0]
    missing = [t.name for t in inputs if t.name not in chosen]
    if missing:
        raise BatchError(
            f"no column feeds model input(s) {', '.join(missing)}: name a column like the input "
            f"or pass --map COLUMN=INPUT (the input's columns: {', '.join(columns)})"
        )
    return [_field(t, chosen[t.name]) for t in inputs]


def _field(t: TensorMetadata, column: str) -> Field:
    if not t.shape or t.shape[0] != -1:
        raise BatchError(
            f"model input '{t.name}' has shape {t.shape}: volley batch sends rows along a "
            "variable first dimension, which this input does not have"
        )
    return Field(t.name, column, t.datatype, tuple(t.shape[1:]))


def select_outputs(
    outputs: Sequence[TensorMetadata], names: Sequence[str], fmt: str
) -> list[TensorMetadata]:
    """The outputs to write: ``names`` (``--output-name``), or every output with a row per input
    row (a variable first dimension); a .npy file holds one."""
    by_name = {t.name: t for t in outputs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise BatchError(
            f"--output-name {', '.join(unknown)}: the model has outputs {', '.join(by_name)}"
        )
    if names:
        chosen = [by_name[n] for n in dict.fromkeys(names)]
        fixed = [t for t in chosen if not t.shape or t.shape[0] != -1]
        if fixed:
            t = fixed[0]
            raise BatchError(
                f"output '{t.name}' has shape {t.shape}, not a row per input row, so a batch "
                "job cannot write it"
            )
    else:
        chosen = [t for t in outputs if t.shape and t.shape[0] == -1]
        if not chosen:
            raise BatchError(
                f"no output of the model has a row per input row (a variable first dimension): "
                f"{', '.join(f'{t.name} {t.shape}' for t in outputs)}"
            )
    if fmt == "npy":
        if len(chosen) != 1:
            raise BatchError(
                f"a .npy output holds one tensor but the model has outputs "
                f"{', '.join(t.name for t in chosen)}: pick one with --output-name, "
                "or write .parquet"
            )
        if chosen[0].datatype == "BYTES":
            raise BatchError(
                f"output '{chosen[0].name}' is BYTES, which .npy cannot hold without pickling: "
                "write .parquet"
            )
    elif any(t.name == ROW_COLUMN for t in chosen):
        raise BatchError(
            f"the model has an output named '{ROW_COLUMN}', the name of the row index column "
            "of a .parquet output: leave it out with --output-name, or write .npy"
        )
    return chosen
