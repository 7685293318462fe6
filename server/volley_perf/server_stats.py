"""Server-side counters from the optional ``ModelStatistics`` RPC, and their differences."""

from __future__ import annotations

from dataclasses import dataclass, fields

import grpc

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class ServerCounters:
    """Cumulative statistics of the model (summed over its versions), or a difference of two."""

    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    inference_count: int = 0
    execution_count: int = 0

    def __sub__(self, other: ServerCounters) -> ServerCounters:
        return ServerCounters(
            *(getattr(self, f.name) - getattr(other, f.name) for f in fields(self))
        )

    def __add__(self, other: ServerCounters) -> ServerCounters:
        return ServerCounters(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(self))
        )

    def per_request_us(self) -> dict[str, float]:
        """Average queue and compute times per successful request, in microseconds."""
        n = self.success_count
        if n <= 0:
            return {"queue": 0.0, "compute_input": 0.0, "compute_infer": 0.0, "compute_output": 0.0}
        return {
            "queue": self.queue_ns / n / 1e3,
            "compute_input": self.compute_input_ns / n / 1e3,
            "compute_infer": self.compute_infer_ns / n / 1e3,
            "compute_output": self.compute_output_ns / n / 1e3,
        }

    def to_dict(self) -> dict[str, int]:
        """The counters as a plain dictionary (for JSON)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class StatsProbe:
    """Takes ``ModelStatistics`` snapshots; turns itself off if the server lacks the RPC."""

    def __init__(
        self, channel: grpc.aio.Channel, model: str, version: str, timeout_s: float
    ) -> None:
        self._stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        self._request = pb.ModelStatisticsRequest(name=model, version=version)
        self._timeout_s = timeout_s
        self.available = True

    async def snapshot(self) -> ServerCounters | None:
        """The model's counters now, or ``None`` when the server cannot report them."""
        if not self.available:
            return None
        try:
            response = await self._stub.ModelStatistics(self._request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError:
            self.available = False
            return None
        total = ServerCounters()
        for stats in response.model_stats:
            total = total + _counters(stats)
        return total


def _counters(stats: pb.ModelStatistics) -> ServerCounters:
    infer = stats.inference_stats
    return ServerCounters(
        success_count=infer.success.count,
        success_ns=infer.success.ns,
        fail_count=infer.fail.count,
        queue_ns=infer.queue.ns,
        compute_input_ns=infer.compute_input.ns,
        compute_infer_ns=infer.compute_infer.ns,
        compute_output_ns=infer.compute_output.ns,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
