"""Fuzzing a real server: 10^5 requests per CI run (split over both transports) of malformed
messages and garbage bytes, with good requests alongside. The server never dies, every
request gets a status (never INTERNAL for bad input), good requests all succeed with the
right answer, and resident memory comes back. ``bench/fuzz.py`` runs the long version.

Set ``VOLLEY_FUZZ_SEED`` to replay a failing run (the seed is in the failure message).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fuzzing import fuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volley._proto.inference import grpc_service_pb2 as pb

from server_process import EXAMPLE_REPOSITORY, ServerProcess

#: Requests per transport in CI (two transports: 10^5 in all).
REQUESTS = int(os.environ.get("VOLLEY_FUZZ_REQUESTS", "50000"))
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_fuzzing_never_hurts_the_server(grpc_transport: str) -> None:
    seed = int(os.environ.get("VOLLEY_FUZZ_SEED", str(time.time_ns() % 2**32)))
    server = ServerProcess(EXAMPLE_REPOSITORY)
    try:
        await fuzz(server.url, seed, 2000)  # warm-up: caches, arenas, thread pools
        start = rss(server.proc.pid)
        started = time.monotonic()
        codes = await fuzz(server.url, seed + 1, REQUESTS)
        elapsed = time.monotonic() - started
        assert server.proc.poll() is None, f"seed {seed}: the server died\n{server.log()}"
        assert sum(codes.values()) == REQUESTS
        assert codes.get("INTERNAL", 0) == 0, (seed, codes)
        assert codes.get("UNKNOWN", 0) == 0, (seed, codes)
        assert codes.get("OK", 0) >= REQUESTS // 10
        end = rss(server.proc.pid)
        assert end <= start * 1.10, (seed, start >> 20, end >> 20)
        print(f"fuzz seed {seed}: {REQUESTS} requests in {elapsed:.1f}s, {codes}")
        log = server.log()
        assert "Traceback" not in log, log[-3000:]
    finally:
        code = server.stop()
    assert code == 0


@pytest.fixture
def fuzz_server(grpc_transport: str) -> Iterator[ServerProcess]:
    server = ServerProcess(EXAMPLE_REPOSITORY)
    yield server
    log = server.log()
    assert server.stop() == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    model=st.sampled_from(["simple", "dense_classifier", "text_features", "x"]),
    version=st.text(max_size=4),
    datatype=st.text(max_size=6) | st.sampled_from(["INT32", "FP32", "BYTES"]),
    shape=st.lists(ints, max_size=4),
    raw=st.binary(max_size=128),
    param=st.sampled_from(["priority", "timeout", "sequence_start", "x"]),
    value=ints,
)
def test_structured_requests_get_a_clean_status(
    fuzz_server: ServerProcess,
    model: str,
    version: str,
    datatype: str,
    shape: list[int],
    raw: bytes,
    param: str,
    value: int,
) -> None:
    msg = pb.ModelInferRequest(model_name=model, model_version=version)
    msg.inputs.add(name="INPUT0", datatype=datatype, shape=shape)
    msg.raw_input_contents.append(raw)
    msg.parameters[param].int64_param = value
    with grpc.insecure_channel(fuzz_server.url) as channel:
        call = channel.unary_unary(METHOD)
        try:
            call(msg.SerializeToString(), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                exc.details()
            )
