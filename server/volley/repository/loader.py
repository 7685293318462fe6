"""Turn one model directory into its effective configuration, served versions and spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from volley._proto.inference import model_config_pb2 as mc
from volley.errors import ConfigError
from volley.model.ensemble import ENSEMBLE_PLATFORM
from volley.model.spec import ModelSpec
from volley.repository import autocomplete, config_io, ensemble, layout, normalize, policy
from volley.repository.autocomplete import SignatureReader
from volley.repository.traffic import TRAFFIC_FILE, TrafficPolicy, check_versions, read_traffic


@dataclass(frozen=True)
class LoadedConfig:
    """A model's effective configuration and the versions it serves."""

    #: The effective configuration, as the ``ModelConfig`` RPC returns it.
    config: mc.ModelConfig
    #: Selected version -> the model file it serves (an ensemble: its model.py), ascending.
    versions: dict[int, Path]
    #: The hot-path view of ``config``.
    spec: ModelSpec
    #: The release policy (``traffic.yaml`` or the load request's), if any.
    traffic: TrafficPolicy | None = None


def load_model_config(
    model_dir: Path,
    read_signature: SignatureReader,
    *,
    gpu_count: int = 0,
    default_max_batch_size: int = 4,
    auto_complete: bool = True,
    override: mc.ModelConfig | None = None,
    traffic_override: TrafficPolicy | None = None,
) -> LoadedConfig:
    """Read, auto-complete, normalize and validate the model in ``model_dir``.

    ``read_signature`` asks the model's backend for a file's signature (auto-complete);
    ``gpu_count`` is the number of visible GPUs (resolves ``KIND_AUTO``);
    ``override`` replaces the configuration file (``RepositoryModelLoad``'s ``config``) and
    ``traffic_override`` the traffic file (its ``traffic``);
    ``default_max_batch_size`` is what auto-complete gives a batchable model without a
    ``max_batch_size``; with ``auto_complete`` False the configuration is only checked against
    the model file, never extended. Every failure is a ``ConfigError`` naming the file at
    fault.
    """
    if not model_dir.is_dir():
        raise ConfigError(
            "model directory does not exist",
            path=str(model_dir),
            hint="each model is a sub-directory of the model repository",
        )
    if override is not None:
        config, config_path = mc.ModelConfig(), "the load request's config"
        config.CopyFrom(override)
    else:
        config, config_file = config_io.read_config(model_dir)
        config_path = str(config_file) if config_file is not None else str(model_dir)
    available = layout.list_versions(model_dir)
    normalize.fill_identity(config, model_name=model_dir.name, versions=available, path=config_path)
    if not available:
        raise ConfigError(
            "model has no version directories",
            path=str(model_dir),
            hint=f"put the model file in a numbered directory, e.g. "
            f"{model_dir.name}/1/{config.default_model_filename}",
        )
    selected = policy.select_versions(config.version_policy, available, path=config_path)
    release: TrafficPolicy | None
    if traffic_override is not None:
        release, release_path = traffic_override, "the load request's traffic"
    else:
        release, release_path = read_traffic(model_dir), str(model_dir / TRAFFIC_FILE)
    if release is not None:
        check_versions(release, set(available), release_path)
        selected = sorted(set(selected) | release.versions())
    if not selected:
        have = ", ".join(str(v) for v in available)
        raise ConfigError(
            f"the version policy selects no version (available: {have})",
            path=config_path,
            hint="at least one version must be available under the version policy; "
            "check version_policy (latest { num_versions: 0 } selects nothing)",
        )
    if config.platform == ENSEMBLE_PLATFORM:
        # no model file to complete from; the version folders may hold the Python steps
        versions = ensemble.prepare(config, {v: available[v] for v in selected}, path=config_path)
    else:
        versions = _model_files(config, {v: available[v] for v in selected})
        autocomplete.autocomplete(
            config,
            versions[selected[-1]],
            read_signature,
            default_max_batch_size=default_max_batch_size,
            fill=auto_complete,
            config_path=config_path,
        )
    normalize.apply_defaults(config, gpu_count=gpu_count, path=config_path)
    normalize.validate(config, path=config_path)
    try:
        spec = ModelSpec.from_config(config)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=exc.path or config_path, hint=exc.hint) from exc
    return LoadedConfig(config=config, versions=versions, spec=spec, traffic=release)


def _model_files(config: mc.ModelConfig, version_dirs: dict[int, Path]) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for version, version_dir in version_dirs.items():
        found = layout.model_file(version_dir, config.backend, config.default_model_filename)
        if found is None:
            expected = version_dir / config.default_model_filename
            raise ConfigError(
                f"version {version} has no model file '{config.default_model_filename}'",
                path=str(expected),
                hint=f"put the {config.backend} model at {expected}, or set "
                "default_model_filename to the file's name",
            )
        files[version] = found
    return files
