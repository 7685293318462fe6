"""tritonclient[grpc] (a client we did not write) against a real Volley server."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from server_process import EXAMPLE_REPOSITORY, ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.url)


def reference(model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(EXAMPLE_REPOSITORY / model / "1" / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("dense_classifier")
    assert client.is_model_ready("simple", "1")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "volley" and "model_configuration" in meta["extensions"]
    md = client.get_model_metadata("dense_classifier", as_json=True)
    assert md["platform"] == "onnxruntime_onnx" and md["versions"] == ["1"]
    assert md["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": ["-1", "64"]}]
    cfg = client.get_model_config("dense_classifier", as_json=True)["config"]
    assert cfg["max_batch_size"] == 32
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [8, 16, 32]
    assert cfg["instance_group"][0]["count"] == 2
    index = client.get_model_repository_index(as_json=True)
    assert {m["name"]: m["state"] for m in index["models"]} == {
        "dense_classifier": "READY",
        "simple": "READY",
        "text_features": "READY",
    }


def test_infer_binary_inputs_matches_onnxruntime(client: grpcclient.InferenceServerClient) -> None:
    batch = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    inp = grpcclient.InferInput("INPUT", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    outputs = [grpcclient.InferRequestedOutput("PROBS"), grpcclient.InferRequestedOutput("LOGITS")]
    result = client.infer("dense_classifier", [inp], outputs=outputs, request_id="compat-1")
    ref = reference("dense_classifier", {"INPUT": batch})
    np.testing.assert_allclose(result.as_numpy("PROBS"), ref["PROBS"], rtol=1e-5)
    np.testing.assert_allclose(result.as_numpy("LOGITS"), ref["LOGITS"], rtol=1e-5)
    assert result.get_response().id == "compat-1"
    assert result.get_response().model_version == "1"


def test_infer_int32_bytes_and_int64(client: grpcclient.InferenceServerClient) -> None:
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 7, dtype=np.int32)
    inputs = [
        grpcclient.InferInput("INPUT0", [2, 16], "INT32"),
        grpcclient.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

    text = np.array([b"Hello", "Grüße".encode(), b""], dtype=object)
    ids = np.array([5, -2, 2**33], dtype=np.int64)
    inputs = [
        grpcclient.InferInput("TEXT", [3], "BYTES"),
        grpcclient.InferInput("IDS", [3], "INT64"),
    ]
    inputs[0].set_data_from_numpy(text)
    inputs[1].set_data_from_numpy(ids)
    result = client.infer("text_features", inputs)
    assert list(result.as_numpy("TEXT_LOWER")) == [b"hello", "grüße".encode(), b""]
    np.testing.assert_array_equal(result.as_numpy("IDS_DOUBLED"), ids * 2)
    np.testing.assert_array_equal(result.as_numpy("IDS_SUM"), [ids.sum()])


def test_statistics_count_what_was_served(client: grpcclient.InferenceServerClient) -> None:
    def count() -> tuple[int, int]:
        stats = client.get_inference_statistics("simple", as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(
            stats["inference_stats"]["success"].get("count", 0)
        )

    before = count()
    x = np.zeros((3, 16), np.int32)
    inputs = [
        grpcclient.InferInput("INPUT0", [3, 16], "INT32"),
        grpcclient.InferInput("INPUT1", [3, 16], "INT32"),
    ]
    for i in inputs:
        i.set_data_from_numpy(x)
    for _ in range(4):
        client.infer("simple", inputs)
    after = count()
    assert (after[0] - before[0], after[1] - before[1]) == (12, 4)


def test_errors_carry_the_right_status(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    bad = grpcclient.InferInput("INPUT", [1, 65], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 65), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("dense_classifier", [bad])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "INPUT" in info.value.message() and "[-1, 64]" in info.value.message()


def test_aio_client_concurrent_requests(server: ServerProcess) -> None:
    async def main() -> list[np.ndarray]:
        async with aioclient.InferenceServerClient(server.url) as aclient:

            async def one(i: int) -> np.ndarray:
                x = np.full((1, 64), float(i), np.float32)
                inp = aioclient.InferInput("INPUT", [1, 64], "FP32")
                inp.set_data_from_numpy(x)
                result = await aclient.infer("dense_classifier", [inp])
                return result.as_numpy("LOGITS")

            return list(await asyncio.gather(*(one(i) for i in range(24))))

    results = asyncio.run(main())
    batch = np.stack([np.full(64, float(i), np.float32) for i in range(24)])
    ref = reference("dense_classifier", {"INPUT": batch})["LOGITS"]
    for i, logits in enumerate(results):
        np.testing.assert_allclose(logits[0], ref[i], rtol=1e-4, atol=1e-6)
