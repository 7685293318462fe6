"""Validation of an ensemble model's configuration (``platform: "ensemble"``), Triton's rules.

An ensemble has no model file: its version folders may be empty (Triton's layout) or hold the
``model.py`` its ``python:<function>`` steps call. Auto-complete has nothing to read, so the
configuration must declare the ensemble's inputs and outputs. The graph must be well formed:

* every step names a model (``python:<function>`` for a Python step), maps at least one input
  and one output, and never names the ensemble itself;
* every tensor a step reads is an ensemble input or some step's output;
* every tensor is produced once (ensemble inputs count as produced);
* every ensemble output is produced by a step, and every ensemble input is read by a step;
* the steps form no cycle.

What depends on the composing models (their inputs, outputs and ``max_batch_size``) is checked
when the ensemble runs, since they may load after it (``volley.serving.ensemble``).
"""

from __future__ import annotations

from pathlib import Path

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError
from volley.model.ensemble import PYTHON_FILE, PYTHON_PREFIX, EnsembleSpec, EnsembleStep


def prepare(config: mc.ModelConfig, version_dirs: dict[int, Path], *, path: str) -> dict[int, Path]:
    """Validate the ensemble ``config``; return each selected version's ``model.py`` path.

    ``version_dirs`` are the selected version folders. The ``model.py`` must exist only when a
    step calls a Python function. Every problem is a ``ConfigError`` naming ``path`` (or the
    missing ``model.py``) and the step at fault.
    """
    _check_fields(config, path)
    spec = EnsembleSpec.from_config(config)
    assert spec is not None
    for raw, step in zip(config.ensemble_scheduling.step, spec.steps, strict=True):
        _check_step(config.name, raw, step, path)
    check_graph(
        config.name,
        [t.name for t in config.input],
        [t.name for t in config.output],
        spec.steps,
        path=path,
    )
    files = {version: version_dir / PYTHON_FILE for version, version_dir in version_dirs.items()}
    if spec.functions:
        for version, file in files.items():
            if not file.is_file():
                step = next(s for s in spec.steps if s.function is not None)
                raise ConfigError(
                    f"ensemble '{config.name}' {step.label} calls a Python function but "
                    f"version {version} has no {PYTHON_FILE}",
                    path=str(file),
                    hint=f"define {', '.join(spec.functions)} in {file}",
                )
    return files


def check_graph(
    name: str,
    inputs: list[str],
    outputs: list[str],
    steps: tuple[EnsembleStep, ...],
    *,
    path: str = "",
) -> None:
    """Check the data flow of ``steps`` between the ensemble's ``inputs`` and ``outputs``."""
    where = f"ensemble '{name}'"
    producer: dict[str, str] = dict.fromkeys(inputs, "the ensemble's inputs")
    for step in steps:
        for tensor in step.writes:
            if tensor in producer:
                raise ConfigError(
                    f"{where} {step.label} produces tensor '{tensor}', which is already "
                    f"produced by {producer[tensor]}",
                    path=path,
                    hint="each ensemble tensor is produced once: map this output to a new name",
                )
            producer[tensor] = step.label
    for step in steps:
        for tensor in sorted(step.reads):
            if tensor not in producer:
                raise ConfigError(
                    f"{where} {step.label} reads unknown tensor '{tensor}': it is neither an "
                    "input of the ensemble nor an output of any step",
                    path=path,
                    hint="map it from an ensemble input or from another step's output_map",
                )
    for tensor in outputs:
        if tensor in inputs or tensor not in producer:
            raise ConfigError(
                f"{where} output '{tensor}' is never produced by any step",
                path=path,
                hint=f"map a step's output to '{tensor}' in its output_map",
            )
    read = set().union(*(step.reads for step in steps))
    for tensor in inputs:
        if tensor not in read:
            raise ConfigError(
                f"{where} input '{tensor}' is not read by any step",
                path=path,
                hint="map it into a step's input_map or remove it from the ensemble's inputs",
            )
    cycle = _find_cycle(steps, producer)
    if cycle:
        loop = " -> ".join(s.label for s in [*cycle, cycle[0]])
        raise ConfigError(
            f"{where} has a cycle: {loop}",
            path=path,
            hint="a step cannot depend, directly or not, on its own outputs",
        )


def _check_fields(config: mc.ModelConfig, path: str) -> None:
    where = f"ensemble '{config.name}'"
    if config.backend:
        raise ConfigError(
            f"{where} names backend '{config.backend}'; an ensemble has no backend",
            path=path,
            hint='remove backend and keep platform: "ensemble"',
        )
    if not config.HasField("ensemble_scheduling") or not config.ensemble_scheduling.step:
        raise ConfigError(
            f"{where} has no steps",
            path=path,
            hint="add ensemble_scheduling { step [ { model_name: ... input_map { ... } "
            "output_map { ... } } ] }",
        )
    for kind, tensors in (("inputs", config.input), ("outputs", config.output)):
        if not tensors:
            raise ConfigError(
                f"{where} declares no {kind}",
                path=path,
                hint=f"an ensemble has no model file to complete its {kind} from: declare "
                f"them in its configuration",
            )
    for field, present, why in (
        ("instance_group", bool(config.instance_group), "it runs no instances of its own"),
        ("model_warmup", bool(config.model_warmup), "warm up its composing models instead"),
        (
            "response_cache",
            config.response_cache.enable,
            "enable the cache on its composing models instead",
        ),
    ):
        if present:
            raise ConfigError(
                f"{where} sets {field}, which ensembles do not support",
                path=path,
                hint=f"remove {field}: {why}",
            )


def _check_step(ensemble: str, raw: mc.ModelEnsembling.Step, step: EnsembleStep, path: str) -> None:
    where = f"ensemble '{ensemble}' step {step.number}"
    if not raw.model_name:
        raise ConfigError(
            f"{where} has no model_name",
            path=path,
            hint="name the composing model (or python:<function>) in model_name",
        )
    where = f"ensemble '{ensemble}' {step.label}"
    if raw.model_name == ensemble:
        raise ConfigError(f"{where} names the ensemble itself", path=path, hint="fix model_name")
    function = step.function
    if function is not None and not function.isidentifier():
        raise ConfigError(
            f"{where}: '{function}' is not a Python function name",
            path=path,
            hint=f"spell a Python step {PYTHON_PREFIX}<function>, e.g. {PYTHON_PREFIX}preprocess",
        )
    if raw.model_version < -1:
        raise ConfigError(
            f"{where} has model_version {raw.model_version}",
            path=path,
            hint="use -1 for the model's default version or a version number",
        )
    for field, mapping in (("input_map", raw.input_map), ("output_map", raw.output_map)):
        if not mapping:
            raise ConfigError(
                f"{where} has no {field}",
                path=path,
                hint=f"map at least one tensor in {field} {{ key: ... value: ... }}",
            )
        for key, value in mapping.items():
            if not key or not value:
                raise ConfigError(
                    f"{where} has an empty name in {field} ('{key}' -> '{value}')",
                    path=path,
                    hint="key is the step model's tensor, value the ensemble tensor",
                )


def _find_cycle(
    steps: tuple[EnsembleStep, ...], producer: dict[str, str]
) -> list[EnsembleStep] | None:
    """A cycle of steps (each reading an output of the one before), if there is one."""
    by_label = {s.label: s for s in steps}
    depends = {
        s.label: sorted({producer[t] for t in s.reads if producer[t] in by_label}) for s in steps
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(label: str) -> list[str] | None:
        state[label] = 1
        path.append(label)
        for dep in depends[label]:
            if state.get(dep) == 1:
                return path[path.index(dep) :]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[label] = 2
        return None

    for step in steps:
        if step.label not in state:
            found = visit(step.label)
            if found:
                # ``path`` follows dependencies backwards; report it in data-flow order,
                # from its first step in the configuration
                cycle = [by_label[label] for label in reversed(found)]
                first = min(range(len(cycle)), key=lambda i: cycle[i].number)
                return cycle[first:] + cycle[:first]
    return None
