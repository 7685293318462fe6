"""Composition root: settings -> repository -> serving -> transports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from volley import __version__
from volley.backends.devices import cuda_device_count
from volley.errors import VolleyError
from volley.frontend.grpc import restriction
from volley.frontend.grpc.server import GrpcFrontend, GrpcOptions, TlsFiles
from volley.frontend.http.server import HttpFrontend
from volley.memory.budget import parse_budgets
from volley.memory.manager import MemoryManager
from volley.serving.cache import ResponseCache, parse_cache_config
from volley.serving.lifecycle import ModelManager
from volley.serving.monitor import MonitorSettings, run_monitors
from volley.serving.poller import RepositoryPoller
from volley.serving.registry import Registry
from volley.serving.service import InferenceService
from volley.settings import ControlMode, ServerSettings
from volley.telemetry.audit import AuditLog, open_sink
from volley.telemetry.gpu import GpuMetrics
from volley.telemetry.logs import LogControl
from volley.telemetry.metrics import MetricsServer, VolleyCollector
from volley.telemetry.tracing import TraceConfig, Tracing, build_exporter

log = logging.getLogger("volley")

#: Protocol extensions this server implements (``ServerMetadataResponse.extensions``).
EXTENSIONS = (
    "model_repository",
    "schedule_policy",
    "model_configuration",
    "statistics",
    "binary_tensor_data",
    "system_shared_memory",
    "trace",
    "logging",
)


def grpc_options(settings: ServerSettings) -> GrpcOptions:
    """The gRPC frontend's options from the settings (TLS files, restrictions, limits)."""
    tls = None
    if settings.grpc_use_ssl:
        assert settings.grpc_server_cert is not None and settings.grpc_server_key is not None
        tls = TlsFiles(
            settings.grpc_server_cert,
            settings.grpc_server_key,
            settings.grpc_root_cert,
            settings.grpc_use_ssl_mutual,
        )
    try:
        restrictions = restriction.parse(settings.grpc_restricted_protocol)
    except ValueError as exc:
        raise VolleyError(str(exc)) from exc
    return GrpcOptions(
        address=settings.grpc_address,
        port=settings.grpc_port,
        transport=settings.grpc_transport.value,
        tls=tls,
        restrictions=restrictions,
        max_message_bytes=settings.grpc_max_message_size,
        channel_args=(
            ("grpc.keepalive_time_ms", settings.grpc_keepalive_time),
            ("grpc.keepalive_timeout_ms", settings.grpc_keepalive_timeout),
            (
                "grpc.keepalive_permit_without_calls",
                int(settings.grpc_keepalive_permit_without_calls),
            ),
            ("grpc.http2.max_pings_without_data", settings.grpc_http2_max_pings_without_data),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                settings.grpc_http2_min_recv_ping_interval_without_data,
            ),
            ("grpc.http2.max_ping_strikes", settings.grpc_http2_max_ping_strikes),
            *(
                (("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),)
                if settings.grpc_max_concurrent_streams
                else ()
            ),
        ),
        grpcio_args=tuple(
            (flag, arg, value)
            for flag, arg, value in (
                (
                    "--grpc-max-connections",
                    "grpc.max_allowed_incoming_connections",
                    settings.grpc_max_connections,
                ),
                (
                    "--grpc-max-connection-idle-ms",
                    "grpc.max_connection_idle_ms",
                    settings.grpc_max_connection_idle_ms,
                ),
                (
                    "--grpc-max-connection-age-ms",
                    "grpc.max_connection_age_ms",
                    settings.grpc_max_connection_age_ms,
                ),
            )
            if value
        ),
    )


class VolleyServer:
    """One running Volley: its model manager, inference service and transports."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        registry = Registry()
        budgets = parse_budgets(settings.memory_budget)
        memory = (
            MemoryManager(budgets, min_residency_s=settings.model_min_residency_secs)
            if budgets
            else None
        )
        self.manager = ModelManager(
            settings.model_repository,
            registry,
            auto_complete=not settings.strict_model_config,
            default_max_batch_size=settings.default_max_batch_size,
            inline_execution_us=settings.inline_execution_us,
            gpu_count=cuda_device_count(),
            load_threads=settings.model_load_thread_count,
            drain_timeout_s=settings.exit_timeout_secs,
            memory=memory,
            pinned=frozenset(settings.pin_model),
            admit_wait_s=settings.model_load_timeout_secs,
            monitoring=(
                MonitorSettings(
                    sample_rate=settings.monitor_sample_rate,
                    window=settings.monitor_window,
                    reference_rows=settings.monitor_reference_rows,
                    psi_threshold=settings.drift_psi_threshold,
                    outlier_quantile=settings.outlier_quantile,
                )
                if settings.monitor_sample_rate > 0
                else None
            ),
        )
        self._monitor_task: asyncio.Task[None] | None = None
        self._poller: RepositoryPoller | None = None
        if settings.model_control_mode is ControlMode.POLL:
            self._poller = RepositoryPoller(
                self.manager, settings.repository_poll_secs, settings.repository_settle_secs
            )
        explicit = settings.model_control_mode is ControlMode.EXPLICIT
        self.service = InferenceService(
            registry,
            self.manager,
            server_name=settings.server_name,
            server_version=__version__,
            extensions=EXTENSIONS,
            explicit_control=explicit,
            strict_readiness=settings.strict_readiness,
            max_inflight=settings.max_inflight_requests,
            load_on_demand=settings.load_on_demand,
            load_timeout_s=settings.model_load_timeout_secs,
        )
        cache_bytes = parse_cache_config(settings.cache_config)
        if cache_bytes:
            self.service.cache = ResponseCache(cache_bytes)
        self.service.log_requests = settings.log_requests
        self.service.logs = LogControl(settings.log_format.value)
        trace_config = TraceConfig.resolve(
            settings.trace_exporter,
            settings.trace_protocol,
            settings.trace_endpoint,
            settings.trace_sample_ratio,
            settings.trace_service_name,
        )
        self.service.tracing = Tracing(trace_config, build_exporter(trace_config))
        self._explicit = explicit
        self._audit: AuditLog | None = None
        if settings.audit_log_sink:
            try:
                sink = open_sink(settings.audit_log_sink)
            except (ValueError, OSError) as exc:
                raise VolleyError(f"--audit-log-sink: {exc}") from exc
            self._audit = AuditLog(
                sink,
                sample_rate=settings.audit_log_sample_rate,
                max_tensor_bytes=settings.audit_log_max_tensor_bytes,
                queue_size=settings.audit_log_queue_size,
            )
            self.service.audit = self._audit
            self.service.audit_mode = settings.audit_log
            self.service.header_keys = frozenset(k.lower() for k in settings.audit_log_metadata)
            self.manager.stats.audit_counts = self._audit.counts
        self._load_models = settings.load_model
        self._grpc = GrpcFrontend(self.service, grpc_options(settings))
        self._http: HttpFrontend | None = None
        if settings.allow_http:
            self._http = HttpFrontend(self.service, settings.http_address, settings.http_port)
        self._metrics: MetricsServer | None = None
        self._gpu_metrics: GpuMetrics | None = None
        if settings.allow_metrics:
            if settings.allow_gpu_metrics:
                self._gpu_metrics = GpuMetrics()
            collector = VolleyCollector(
                self.service.model_snapshots,
                self.manager.stats,
                {"grpc": self._grpc.transport.value},
                self._gpu_metrics,
                self.service.release_snapshot,
            )
            self._metrics = MetricsServer(
                collector, settings.metrics_address, settings.metrics_port
            )
        #: The bound metrics port (0 when metrics are off).
        self.metrics_port = 0
        #: The bound HTTP port (0 when HTTP is off).
        self.http_port = 0
        self.port = 0

    @property
    def grpc_transport(self) -> str:
        """The gRPC transport serving (``native`` or ``grpcio``)."""
        return self._grpc.transport.value

    async def start(self) -> int:
        """Load models, then bind and start the gRPC server; returns the bound port."""
        for repo in self.settings.model_repository:
            if not repo.is_dir():
                raise VolleyError(f"model repository '{repo}' is not a directory")
        if self._audit is not None:
            self._audit.start()
        await self._load_initial_models()
        self.port = await self._grpc.start()
        if self._http is not None:
            try:
                self.http_port = await self._http.start()
            except BaseException:
                await self._grpc.stop(0)
                raise
        if self._metrics is not None:
            try:
                self.metrics_port = self._metrics.start()
            except OSError as exc:
                raise VolleyError(
                    f"could not bind the metrics port {self.settings.metrics_port}: {exc}"
                ) from exc
        self.service.live = True
        if self._poller is not None:
            self._poller.start()
        if self.settings.monitor_sample_rate > 0:
            self._monitor_task = asyncio.get_running_loop().create_task(
                run_monitors(self.service.monitors, 1.0), name="volley-monitors"
            )
        log.info("serving gRPC on %s:%d", self.settings.grpc_address, self.port)
        config = self.service.tracing.config
        if config.exporter != "none":
            log.info(
                "tracing: %s exporter (%s), %g of requests sampled",
                config.exporter,
                config.protocol,
                config.sample_ratio,
            )
        return self.port

    async def _load_initial_models(self) -> None:
        pinned = list(self.settings.pin_model)
        if self._explicit:
            names = list(self.manager.model_dirs()) if "*" in self._load_models else []
            names += [n for n in self._load_models if n != "*"]
        else:
            names = list(self.manager.model_dirs())
        # pinned models first: they hold their memory before anything can be evicted for them
        names = pinned + [n for n in dict.fromkeys(names) if n not in pinned]
        for name in names:
            try:
                await self.manager.load(name)
            except VolleyError as exc:
                log.error("model '%s' is unavailable: %s", name, exc.message)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish (bounded by ``grace``), unload."""
        self.service.draining = True
        if self._poller is not None:
            await self._poller.stop()
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
        grace = self.settings.exit_timeout_secs if grace is None else grace
        if self._http is not None:
            await asyncio.gather(self._grpc.stop(grace), self._http.stop(grace))
        else:
            await self._grpc.stop(grace)
        await self.manager.shutdown()
        if self._audit is not None:
            await self._audit.stop()
        if self._metrics is not None:
            self._metrics.stop()
        if self._gpu_metrics is not None:
            self._gpu_metrics.close()
        await self.service.shadows.stop()
        await asyncio.to_thread(self.service.tracing.shutdown)
        self.service.shm.close()
        self.service.live = False


async def serve(settings: ServerSettings, port_file: Path | None = None) -> None:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully."""
    server = VolleyServer(settings)
    port = await server.start()
    if port_file is not None:
        # the gRPC port, then the HTTP port when HTTP is served; renamed into place whole
        ports = f"{port}\n" + (f"{server.http_port}\n" if server.http_port else "")
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(ports)
        partial.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _exit_now, sig)
    grace = settings.exit_timeout_secs
    log.info("shutting down: finishing in-flight requests (up to %ss)", grace)
    try:
        # The transports get the grace period; unloading gets a bounded margin after it.
        await asyncio.wait_for(server.stop(), grace + _UNLOAD_MARGIN_S)
    except asyncio.TimeoutError:
        log.error("shutdown did not finish within %ss; exiting anyway", grace + _UNLOAD_MARGIN_S)
        _flush_and_exit(1)
    log.info("stopped")


#: Seconds after the grace period that unloading models may take before the process exits.
_UNLOAD_MARGIN_S = 10.0


def _exit_now(sig: signal.Signals) -> None:
    """A second SIGTERM/SIGINT during shutdown: exit at once."""
    log.warning("second %s during shutdown: exiting now", sig.name)
    _flush_and_exit(1)


def _flush_and_exit(code: int) -> None:
    logging.shutdown()
    os._exit(code)
