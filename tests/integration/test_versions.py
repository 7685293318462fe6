"""Version policies over gRPC: which versions load, which one answers by default."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from volley._proto.inference import grpc_service_pb2 as pb

from inproc import EXAMPLES, running_server


def versioned_repo(root: Path, policy: str) -> Path:
    model = root / "simple"
    model.mkdir(parents=True)
    for version in (1, 2, 3):
        (model / str(version)).mkdir()
        shutil.copy(EXAMPLES / "simple" / "1" / "model.onnx", model / str(version) / "model.onnx")
    (model / "config.pbtxt").write_text(f'backend: "onnxruntime"\n{policy}\n')
    return root


def request(version: str = "") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="simple", model_version=version)
    for name in ("INPUT0", "INPUT1"):
        msg.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        msg.raw_input_contents.append(np.ones((1, 16), np.int32).tobytes())
    return msg


@pytest.mark.parametrize(
    ("policy", "loaded"),
    [
        ("", ["3"]),
        ("version_policy: { latest { num_versions: 2 } }", ["2", "3"]),
        ("version_policy: { all { } }", ["1", "2", "3"]),
        ("version_policy: { specific { versions: [ 1, 3 ] } }", ["1", "3"]),
    ],
)
async def test_version_policy(tmp_path: Path, policy: str, loaded: list[str]) -> None:
    async with running_server(versioned_repo(tmp_path, policy)) as (_, stub, _ch):
        md = await stub.ModelMetadata(pb.ModelMetadataRequest(name="simple"))
        assert list(md.versions) == loaded
        assert (await stub.ModelInfer(request())).model_version == loaded[-1]
        for version in loaded:
            assert (await stub.ModelInfer(request(version))).model_version == version
        for version in {"1", "2", "3"} - set(loaded):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(request(version))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        stats = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="simple"))
        assert [s.version for s in stats.model_stats] == loaded
