"""The validated, plain-Python view of a model configuration that the hot path reads.

A ``ModelSpec`` is built once per loaded model from its effective ``ModelConfig``; requests
only read plain ints, strings and tuples from it, never protobuf messages.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError
from volley.model import dtypes
from volley.model.ensemble import EnsembleSpec
from volley.model.sequence import SequenceSpec


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output as the protocol sees it."""

    name: str
    #: v2 datatype string, e.g. ``"FP32"`` or ``"BYTES"``.
    datatype: str
    #: Configured dims without the batch dimension; ``-1`` is a variable dimension.
    dims: tuple[int, ...]
    optional: bool = False
    #: Shape (without batch) the backend consumes/produces instead of ``dims``, if configured.
    reshape: tuple[int, ...] | None = None

    def full_shape(self, max_batch_size: int) -> list[int]:
        """Shape as ``ModelMetadata`` reports it: ``[-1] + dims`` for batching models."""
        return ([-1] if max_batch_size > 0 else []) + list(self.dims)


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """A queue's timeout and size policy (``ModelQueuePolicy``), in plain units."""

    #: True: a timed-out request is moved back and still runs (``DELAY``); False: rejected.
    delay_on_timeout: bool = False
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    #: 0 = unbounded.
    max_queue_size: int = 0

    def effective_timeout_us(self, requested_us: int) -> int:
        """Timeout for a request that asked for ``requested_us`` (0 = asked nothing)."""
        if (
            self.allow_timeout_override
            and self.default_timeout_us
            and 0 < requested_us < self.default_timeout_us
        ):
            return requested_us
        return self.default_timeout_us

    @classmethod
    def from_proto(cls, policy: mc.ModelQueuePolicy) -> QueuePolicy:
        return cls(
            delay_on_timeout=policy.timeout_action == mc.ModelQueuePolicy.DELAY,
            default_timeout_us=int(policy.default_timeout_microseconds),
            allow_timeout_override=bool(policy.allow_timeout_override),
            max_queue_size=int(policy.max_queue_size),
        )


@dataclass(frozen=True, slots=True)
class BatchingSpec:
    """``dynamic_batching`` settings of a model, normalized."""

    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int = 0
    preserve_ordering: bool = False
    #: 0 = a single queue.
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = field(default_factory=QueuePolicy)
    priority_queue_policies: dict[int, QueuePolicy] = field(default_factory=dict)

    def queue_policy(self, level: int) -> QueuePolicy:
        """Policy of priority ``level`` (its override, else the default policy)."""
        return self.priority_queue_policies.get(level, self.default_queue_policy)

    def level_of(self, priority: int) -> int:
        """Queue level for a request ``priority``: 0 or out-of-range -> the default level."""
        if self.priority_levels == 0:
            return 0
        if priority <= 0 or priority > self.priority_levels:
            return self.default_priority_level
        return priority


@dataclass(frozen=True, slots=True)
class Accelerator:
    """An execution accelerator (ORT execution provider) and its string parameters."""

    name: str
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """Everything the server needs to know about one model version, validated."""

    name: str
    #: ``onnxruntime_onnx`` or ``tensorrt_plan``.
    platform: str
    #: ``onnxruntime`` or ``tensorrt``.
    backend: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: None: requests run one at a time (no ``dynamic_batching`` or ``max_batch_size == 0``).
    batching: BatchingSpec | None
    #: Number of model instances (parallel executors) and where they run.
    instance_count: int = 1
    instance_kind: str = "CPU"
    gpus: tuple[int, ...] = ()
    #: ``ModelConfig.parameters`` as plain strings.
    parameters: dict[str, str] = field(default_factory=dict)
    graph_level: int = 0
    gpu_accelerators: tuple[Accelerator, ...] = ()
    cpu_accelerators: tuple[Accelerator, ...] = ()
    #: The effective configuration, returned by the ``ModelConfig`` RPC.
    config: mc.ModelConfig = field(default_factory=mc.ModelConfig, repr=False, compare=False)
    #: ``sequence_batching`` (stateful models), when configured.
    sequence: SequenceSpec | None = None
    #: The steps of an ensemble (``platform: "ensemble"``); None for every other model.
    ensemble: EnsembleSpec | None = None
    input_by_name: dict[str, TensorSpec] = field(default_factory=dict, repr=False)
    output_by_name: dict[str, TensorSpec] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.input_by_name.update({t.name: t for t in self.inputs})
        self.output_by_name.update({t.name: t for t in self.outputs})

    @functools.cached_property
    def required_inputs(self) -> int:
        """Number of inputs a request must carry."""
        return sum(1 for t in self.inputs if not t.optional)

    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        """Every output name in configuration order."""
        return tuple(t.name for t in self.outputs)

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> ModelSpec:
        """Build the spec from an effective (normalized and validated) ``ModelConfig``."""
        inputs = tuple(_tensor(t, is_input=True) for t in config.input)
        outputs = tuple(_tensor(t, is_input=False) for t in config.output)
        batching = None
        if config.HasField("dynamic_batching"):
            _check_bounds(config.dynamic_batching)
        if config.HasField("dynamic_batching") and config.max_batch_size > 0:
            db = config.dynamic_batching
            preferred = tuple(sorted(int(s) for s in db.preferred_batch_size)) or (
                config.max_batch_size,
            )
            batching = BatchingSpec(
                preferred_batch_sizes=preferred,
                max_queue_delay_us=int(db.max_queue_delay_microseconds),
                preserve_ordering=bool(db.preserve_ordering),
                priority_levels=int(db.priority_levels),
                default_priority_level=int(db.default_priority_level),
                default_queue_policy=QueuePolicy.from_proto(db.default_queue_policy),
                priority_queue_policies={
                    int(k): QueuePolicy.from_proto(v) for k, v in db.priority_queue_policy.items()
                },
            )
        count, kind = 0, "CPU"
        gpus: tuple[int, ...] = ()
        for group in config.instance_group:
            count += max(int(group.count), 1) * max(len(group.gpus), 1)
            if group.kind == mc.ModelInstanceGroup.KIND_GPU:
                kind, gpus = "GPU", tuple(int(g) for g in group.gpus)
        accel = config.optimization.execution_accelerators
        return cls(
            name=config.name,
            platform=config.platform,
            backend=config.backend,
            max_batch_size=int(config.max_batch_size),
            inputs=inputs,
            outputs=outputs,
            batching=batching,
            instance_count=max(count, 1),
            instance_kind=kind,
            gpus=gpus,
            parameters={k: v.string_value for k, v in config.parameters.items()},
            graph_level=int(config.optimization.graph.level),
            gpu_accelerators=tuple(_accel(a) for a in accel.gpu_execution_accelerator),
            cpu_accelerators=tuple(_accel(a) for a in accel.cpu_execution_accelerator),
            config=config,
            ensemble=EnsembleSpec.from_config(config),
            sequence=(
                SequenceSpec.from_config(config) if config.HasField("sequence_batching") else None
            ),
        )


#: Largest ``max_queue_delay_microseconds`` accepted (one hour).
MAX_QUEUE_DELAY_US = 3_600_000_000
#: Largest queue timeout accepted (30 days; the batching core counts nanoseconds in 64 bits).
MAX_TIMEOUT_US = 30 * 86_400_000_000


def _check_bounds(db: mc.ModelDynamicBatching) -> None:
    if db.max_queue_delay_microseconds > MAX_QUEUE_DELAY_US:
        raise ConfigError(
            f"dynamic_batching.max_queue_delay_microseconds is {db.max_queue_delay_microseconds}, "
            f"more than the limit of {MAX_QUEUE_DELAY_US} (one hour)",
            hint="a queue delay is microseconds to a few milliseconds",
        )
    policies = [db.default_queue_policy, *db.priority_queue_policy.values()]
    for policy in policies:
        if policy.default_timeout_microseconds > MAX_TIMEOUT_US:
            raise ConfigError(
                f"queue policy default_timeout_microseconds is "
                f"{policy.default_timeout_microseconds}, more than the limit of {MAX_TIMEOUT_US} "
                "(30 days)",
                hint="use 0 for no timeout",
            )


def _tensor(t: mc.ModelInput | mc.ModelOutput, *, is_input: bool) -> TensorSpec:
    datatype = dtypes.FROM_CONFIG.get(t.data_type)
    if datatype is None:
        raise ConfigError(
            f"tensor '{t.name}' has invalid data_type {t.data_type}",
            hint="set data_type to one of TYPE_BOOL, TYPE_UINT8 ... TYPE_FP64, TYPE_STRING",
        )
    reshape = tuple(int(d) for d in t.reshape.shape) if t.HasField("reshape") else None
    return TensorSpec(
        name=t.name,
        datatype=datatype,
        dims=tuple(int(d) for d in t.dims),
        optional=bool(getattr(t, "optional", False)) if is_input else False,
        reshape=reshape,
    )


def _accel(a: mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator) -> Accelerator:
    return Accelerator(name=a.name, parameters=tuple(sorted(a.parameters.items())))
