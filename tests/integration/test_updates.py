"""Drop-in model updates in poll mode, and explicit load/unload, under load: nothing fails."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest

from volley._proto.inference import grpc_service_pb2 as pb
from volley._proto.inference import grpc_service_pb2_grpc as pb_grpc

from inproc import running_server
from onnx_models import add_constant

CONFIG = """backend: "onnxruntime"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 500 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
POLL = {"model_control_mode": "poll", "repository_poll_secs": 0.1, "repository_settle_secs": 0.3}


def drop_version(model_dir: Path, version: int, value: float | None = None) -> None:
    """Write a version folder elsewhere, then rename it into place (an atomic drop-in)."""
    staging = model_dir.parent / f".staging-{model_dir.name}-{version}-{time.monotonic_ns()}"
    staging.mkdir()
    onnx.save(add_constant(float(version if value is None else value)), str(staging / "model.onnx"))
    old = (time.time() - 60) * 1e9  # a finished copy: nothing changed for a while
    os.utime(staging / "model.onnx", ns=(int(old), int(old)))
    target = model_dir / str(version)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def make_repo(root: Path, versions: tuple[int, ...] = (1,), config: str = CONFIG) -> Path:
    model_dir = root / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    for version in versions:
        drop_version(model_dir, version)
    return model_dir


def request(rows: int = 1) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="X", datatype="FP32", shape=[rows, 4])
    msg.raw_input_contents.append(np.zeros((rows, 4), np.float32).tobytes())
    return msg


def answer(response: pb.ModelInferResponse) -> float:
    values = np.frombuffer(response.raw_output_contents[0], np.float32)
    assert np.all(values == values[0])
    return float(values[0])


class Load:
    """Clients sending continuously until stopped; every response is checked."""

    def __init__(self, stub: pb_grpc.GRPCInferenceServiceStub, clients: int = 4) -> None:
        self._stub = stub
        self._stop = asyncio.Event()
        self.ok = 0
        self.errors: list[str] = []
        self.seen: set[float] = set()
        self._tasks = [asyncio.ensure_future(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                response = await self._stub.ModelInfer(request(), timeout=10)
            except grpc.aio.AioRpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            value = answer(response)
            # the answer was computed by the version the response names
            if value != float(response.model_version):
                self.errors.append(f"version {response.model_version} answered {value}")
            self.seen.add(value)
            self.ok += 1

    async def stop(self, wait_for: float | None = None) -> None:
        """Stop, after one answer of ``wait_for`` (bounded: 10 s) when given."""
        deadline = time.monotonic() + 10
        while wait_for is not None and wait_for not in self.seen and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out waiting for the repository change"
        await asyncio.sleep(0.05)


async def served_versions(stub: pb_grpc.GRPCInferenceServiceStub) -> list[str]:
    try:
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m"))
    except grpc.aio.AioRpcError:
        return []
    return list(meta.versions)


async def index(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> list[pb.RepositoryIndexResponse.ModelIndex]:
    return list((await stub.RepositoryIndex(pb.RepositoryIndexRequest())).models)


async def test_twenty_version_swaps_under_load_fail_nothing(tmp_path: Path) -> None:
    model_dir = make_repo(tmp_path / "repo")
    async with running_server(tmp_path / "repo", **POLL) as (_, stub, _ch):
        load = Load(stub)
        try:
            newest = 1
            for cycle in range(20):
                if cycle % 5 == 4 and newest > 2:
                    shutil.rmtree(model_dir / str(newest))  # removed: the previous one serves
                    newest -= 1
                elif cycle % 5 == 2:
                    drop_version(model_dir, newest, value=newest)  # replaced, same number
                    await asyncio.sleep(0.5)
                    continue
                else:
                    newest += 1
                    drop_version(model_dir, newest)
                expected = [str(newest)]

                async def switched(expected: list[str] = expected) -> bool:
                    return await served_versions(stub) == expected

                await wait_for(switched)
                await asyncio.sleep(0.1)
        finally:
            await load.stop()
        assert load.errors == []
        assert load.ok > 100
        assert len(load.seen) >= 5


async def test_a_corrupt_version_leaves_the_serving_one(tmp_path: Path) -> None:
    model_dir = make_repo(tmp_path / "repo")
    async with running_server(tmp_path / "repo", **POLL) as (_, stub, _ch):
        load = Load(stub, clients=2)
        try:
            (model_dir / "2").mkdir()
            (model_dir / "2" / "model.onnx").write_bytes(b"not an onnx file")
            old = int((time.time() - 60) * 1e9)
            os.utime(model_dir / "2" / "model.onnx", ns=(old, old))

            async def failed() -> bool:
                return any(m.version == "2" and m.reason for m in await index(stub))

            await wait_for(failed)
            rows = {(m.version, m.state): m.reason for m in await index(stub)}
            assert ("1", "READY") in rows
            assert "cannot read ONNX model" in rows[("2", "UNAVAILABLE")]
            assert str(tmp_path) not in rows[("2", "UNAVAILABLE")]
            assert await served_versions(stub) == ["1"]
            drop_version(model_dir, 2)  # fixed: retried because its files changed

            async def fixed() -> bool:
                return await served_versions(stub) == ["2"]

            await wait_for(fixed)
        finally:
            await load.stop(wait_for=2.0)
        assert load.errors == []
        assert load.seen == {1.0, 2.0}


async def test_a_batching_edit_applies_without_a_reload(tmp_path: Path) -> None:
    model_dir = make_repo(tmp_path / "repo")
    async with running_server(tmp_path / "repo", **POLL) as (server, stub, _ch):
        before = server.service.registry.get("m").versions[1]  # type: ignore[union-attr]
        load = Load(stub, clients=2)
        try:
            config = CONFIG.replace("500", "2000")
            (model_dir / "config.pbtxt").write_text(config)
            old = int((time.time() - 60) * 1e9)
            os.utime(model_dir / "config.pbtxt", ns=(old, old))

            async def applied() -> bool:
                cfg = (await stub.ModelConfig(pb.ModelConfigRequest(name="m"))).config
                return cfg.dynamic_batching.max_queue_delay_microseconds == 2000

            await wait_for(applied)
            after = server.service.registry.get("m").versions[1]  # type: ignore[union-attr]
            assert after is not before
            assert after.loaded is not None and before.loaded is None
            assert after.stats is before.stats  # statistics continue
        finally:
            await load.stop()
        assert load.errors == []


async def test_a_slow_copy_is_loaded_only_when_complete(tmp_path: Path) -> None:
    model_dir = make_repo(tmp_path / "repo")
    settings = {**POLL, "repository_settle_secs": 0.8}
    async with running_server(tmp_path / "repo", **settings) as (_, stub, _ch):
        data = add_constant(2.0).SerializeToString()
        (model_dir / "2").mkdir()
        target = model_dir / "2" / "model.onnx"
        with open(target, "wb") as f:
            for i in range(0, len(data), max(len(data) // 6, 1)):
                f.write(data[i : i + max(len(data) // 6, 1)])
                f.flush()
                await asyncio.sleep(0.4)  # slower than a poll, quicker than the settle period
                assert await served_versions(stub) == ["1"]
                assert not any(m.version == "2" and m.reason for m in await index(stub))

        async def served() -> bool:
            return await served_versions(stub) == ["2"]

        await wait_for(served)
        response = await stub.ModelInfer(request())
        assert answer(response) == 2.0


async def test_a_removed_model_folder_is_unloaded(tmp_path: Path) -> None:
    model_dir = make_repo(tmp_path / "repo")
    async with running_server(tmp_path / "repo", **POLL) as (_, stub, _ch):
        assert await served_versions(stub) == ["1"]
        shutil.rmtree(model_dir)

        async def gone() -> bool:
            return await served_versions(stub) == []

        await wait_for(gone)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ModelInfer(request())
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert [m.name for m in await index(stub)] == []


async def test_explicit_reload_and_unload_under_load(tmp_path: Path) -> None:
    model_dir = make_repo(tmp_path / "repo")
    async with running_server(
        tmp_path / "repo", model_control_mode="explicit", load_models=["m"]
    ) as (
        _,
        stub,
        _ch,
    ):
        load = Load(stub)
        try:
            for version in range(2, 6):
                drop_version(model_dir, version)
                await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m"))
                assert await served_versions(stub) == [str(version)]
                await asyncio.sleep(0.1)
        finally:
            await load.stop()
        assert load.errors == []
        assert load.seen >= {2.0, 5.0}


async def test_an_unload_answers_the_queued_requests(tmp_path: Path) -> None:
    slow = CONFIG.replace("500", "300000")  # requests wait 0.3 s in the queue
    make_repo(tmp_path / "repo", config=slow)
    async with running_server(
        tmp_path / "repo", model_control_mode="explicit", load_models=["m"]
    ) as (
        _,
        stub,
        _ch,
    ):
        queued = [asyncio.ensure_future(stub.ModelInfer(request(), timeout=10)) for _ in range(3)]
        await asyncio.sleep(0.05)
        await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="m"))
        responses = await asyncio.gather(*queued)
        assert [answer(r) for r in responses] == [1.0, 1.0, 1.0]
        with pytest.raises(grpc.aio.AioRpcError) as after:
            await stub.ModelInfer(request())
        assert after.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)


async def test_load_with_a_config_override(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    async with running_server(tmp_path / "repo", model_control_mode="explicit") as (_, stub, _ch):
        override = '{"backend": "onnxruntime", "max_batch_size": 2}'
        load = pb.RepositoryModelLoadRequest(model_name="m")
        load.parameters["config"].string_param = override
        await stub.RepositoryModelLoad(load)
        cfg = (await stub.ModelConfig(pb.ModelConfigRequest(name="m"))).config
        assert cfg.max_batch_size == 2
        bad = pb.RepositoryModelLoadRequest(model_name="m")
        bad.parameters["config"].string_param = "{not json"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RepositoryModelLoad(bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await stub.ModelConfig(pb.ModelConfigRequest(name="m"))).config.max_batch_size == 2


def test_unloading_returns_memory(tmp_path: Path) -> None:
    """20 load/unload cycles of a ~40 MB model: RSS stays within 10% of the first load's."""
    from server_process import ServerProcess

    model_dir = tmp_path / "repo" / "big"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    onnx.save(
        add_constant(1.0, padding_bytes=40 * 1024 * 1024), str(model_dir / "1" / "model.onnx")
    )
    server = ServerProcess(tmp_path / "repo", extra_args=["--model-control-mode", "explicit"])
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(Path(f"/proc/{server.proc.pid}/statm").read_text().split()[1]) * page

    channel = grpc.insecure_channel(server.url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        big = pb.ModelInferRequest(model_name="big")
        big.inputs.add(name="X", datatype="FP32", shape=[1, 4])
        big.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
        readings = []
        for _ in range(20):
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="big"), timeout=60)
            stub.ModelInfer(big, timeout=10)
            readings.append(rss())
            stub.RepositoryModelUnload(
                pb.RepositoryModelUnloadRequest(model_name="big"), timeout=60
            )
        first = readings[0]
        assert max(readings) <= first * 1.10, [r // 2**20 for r in readings]
    finally:
        channel.close()
        assert server.stop() == 0, server.log()
