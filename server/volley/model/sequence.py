"""The hot-path view of ``sequence_batching``: control inputs, implicit state, strategy.

Control inputs (``START``, ``END``, ``READY``, ``CORRID`` as Triton names the kinds) and state
inputs are model inputs the server fills, not the client: they are absent from the
configuration's ``input`` list and from a request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError
from volley.model import dtypes

_Control = mc.ModelSequenceBatching.Control
KINDS = {
    _Control.CONTROL_SEQUENCE_START: "start",
    _Control.CONTROL_SEQUENCE_END: "end",
    _Control.CONTROL_SEQUENCE_READY: "ready",
    _Control.CONTROL_SEQUENCE_CORRID: "corrid",
}
#: Triton's default idle time of a sequence before it is released.
DEFAULT_IDLE_US = 1_000_000


@dataclass(frozen=True)
class ControlSpec:
    """One control input: which signal it carries and how (values for false and true)."""

    name: str
    kind: str
    datatype: str
    false_true: tuple[float | int | bool, float | int | bool] = (0, 1)

    def tensor(self, values: list[bool] | list[int | str], batched: bool) -> np.ndarray:
        """The control tensor for rows carrying ``values`` (flags, or correlation ids)."""
        if self.kind == "corrid":
            dtype: np.dtype = (
                np.dtype(object) if self.datatype == "BYTES" else dtypes.NUMPY[self.datatype]
            )
            # string tensors go to the runtime as ``str`` (ONNX strings are text)
            data = [str(v) if self.datatype == "BYTES" else v for v in values]
            array = np.array(data, dtype=dtype)
        else:
            false, true = self.false_true
            array = np.array(
                [true if v else false for v in values], dtype=dtypes.NUMPY[self.datatype]
            )
        return array.reshape(-1, 1) if batched else array.reshape(1)


@dataclass(frozen=True)
class StateSpec:
    """Implicit state: the server feeds ``output_name`` of one request back as ``input_name``
    of the sequence's next request (zeros at its start)."""

    input_name: str
    output_name: str
    datatype: str
    dims: tuple[int, ...]

    def initial(self, rows: int, batched: bool) -> np.ndarray:
        """The state of a sequence that starts."""
        shape = (rows, *self.dims) if batched else self.dims
        return np.zeros(shape, dtype=dtypes.NUMPY[self.datatype])


@dataclass(frozen=True)
class SequenceSpec:
    """``sequence_batching`` of a model, validated."""

    strategy: str
    max_idle_ns: int
    controls: tuple[ControlSpec, ...]
    states: tuple[StateSpec, ...]
    #: Oldest: sequences considered per batch, preferred batch sizes, queue delay.
    max_candidates: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ns: int = 0

    @property
    def server_inputs(self) -> frozenset[str]:
        """Model inputs the server fills: control and state inputs."""
        return frozenset(c.name for c in self.controls) | {s.input_name for s in self.states}

    @property
    def state_outputs(self) -> frozenset[str]:
        """Model outputs that are state, kept by the server and not returned."""
        return frozenset(s.output_name for s in self.states)

    @classmethod
    def from_config(cls, config: mc.ModelConfig, path: str = "") -> SequenceSpec:
        """Validate and convert ``config.sequence_batching``."""
        sb = config.sequence_batching
        controls: list[ControlSpec] = []
        seen: set[str] = set()
        for control_input in sb.control_input:
            if len(control_input.control) != 1:
                raise ConfigError(
                    f"sequence_batching control input '{control_input.name}' must have exactly "
                    "one control",
                    path=path,
                )
            (control,) = control_input.control
            kind = KINDS[control.kind]
            if kind in seen:
                raise ConfigError(f"sequence_batching has two {kind.upper()} controls", path=path)
            seen.add(kind)
            controls.append(_control(control_input.name, kind, control, path))
        states = []
        for state in sb.state:
            datatype = dtypes.FROM_CONFIG.get(state.data_type)
            if datatype is None or datatype in ("BYTES", "BF16") or any(d < 1 for d in state.dims):
                raise ConfigError(
                    f"sequence_batching state '{state.input_name}': needs a numeric data_type "
                    "and fixed positive dims",
                    path=path,
                )
            for initial in state.initial_state:
                if initial.WhichOneof("state_data") == "data_file":
                    raise ConfigError(
                        f"state '{state.input_name}': initial_state data_file is not supported "
                        "(states start as zeros)",
                        path=path,
                    )
            states.append(
                StateSpec(state.input_name, state.output_name, datatype, tuple(state.dims))
            )
        idle_us = sb.max_sequence_idle_microseconds or DEFAULT_IDLE_US
        if sb.WhichOneof("strategy_choice") == "oldest":
            oldest = sb.oldest
            return cls(
                "oldest",
                idle_us * 1000,
                tuple(controls),
                tuple(states),
                max_candidates=max(1, oldest.max_candidate_sequences),
                preferred_batch_sizes=tuple(sorted(oldest.preferred_batch_size)),
                max_queue_delay_ns=oldest.max_queue_delay_microseconds * 1000,
            )
        return cls(
            "direct",
            idle_us * 1000,
            tuple(controls),
            tuple(states),
            max_queue_delay_ns=sb.direct.max_queue_delay_microseconds * 1000,
        )


def _control(
    name: str, kind: str, control: mc.ModelSequenceBatching.Control, path: str
) -> ControlSpec:
    if kind == "corrid":
        datatype = dtypes.FROM_CONFIG.get(control.data_type)
        if datatype not in ("UINT64", "INT64", "UINT32", "INT32", "BYTES"):
            raise ConfigError(
                f"CORRID control '{name}' needs data_type TYPE_UINT64, TYPE_INT64, "
                "TYPE_UINT32, TYPE_INT32 or TYPE_STRING",
                path=path,
            )
        return ControlSpec(name, kind, datatype)
    given = [
        (field, values)
        for field, values in (
            ("INT32", list(control.int32_false_true)),
            ("FP32", list(control.fp32_false_true)),
            ("BOOL", list(control.bool_false_true)),
        )
        if values
    ]
    if len(given) != 1 or len(given[0][1]) != 2:
        raise ConfigError(
            f"{kind.upper()} control '{name}' needs exactly one of int32_false_true, "
            "fp32_false_true, bool_false_true with two values",
            path=path,
        )
    datatype, (false, true) = given[0]
    return ControlSpec(name, kind, datatype, (false, true))
