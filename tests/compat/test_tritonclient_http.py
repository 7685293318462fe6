"""tritonclient.http (a client we did not write) against a real Volley server's REST port."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from server_process import EXAMPLE_REPOSITORY, ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


def reference(model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(EXAMPLE_REPOSITORY / model / "1" / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def test_health(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("dense_classifier")
    assert client.is_model_ready("simple", "1")
    assert not client.is_model_ready("simple", "3")
    assert not client.is_model_ready("no_such_model")


def test_metadata_config_and_index(client: httpclient.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == "volley" and "binary_tensor_data" in meta["extensions"]
    md = client.get_model_metadata("dense_classifier")
    assert md["platform"] == "onnxruntime_onnx" and md["versions"] == ["1"]
    assert md["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 64]}]
    assert client.get_model_metadata("dense_classifier", "1") == md
    cfg = client.get_model_config("dense_classifier")
    assert cfg["max_batch_size"] == 32
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [8, 16, 32]
    assert cfg["instance_group"][0]["count"] == 2
    index = client.get_model_repository_index()
    assert {m["name"]: m["state"] for m in index} == {
        "dense_classifier": "READY",
        "simple": "READY",
        "text_features": "READY",
    }


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False, None], ids=["binary-out", "json-out", "all"])
def test_infer_matches_onnxruntime(
    client: httpclient.InferenceServerClient, binary_in: bool, binary_out: bool | None
) -> None:
    batch = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    inp = httpclient.InferInput("INPUT", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary_in)
    outputs = None
    if binary_out is not None:
        outputs = [
            httpclient.InferRequestedOutput("PROBS", binary_data=binary_out),
            httpclient.InferRequestedOutput("LOGITS", binary_data=binary_out),
        ]
    result = client.infer("dense_classifier", [inp], outputs=outputs, request_id="compat-1")
    ref = reference("dense_classifier", {"INPUT": batch})
    np.testing.assert_allclose(result.as_numpy("PROBS"), ref["PROBS"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("LOGITS"), ref["LOGITS"], rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["id"] == "compat-1" and response["model_version"] == "1"
    binary = [("binary_data_size" in (o.get("parameters") or {})) for o in response["outputs"]]
    assert binary == [binary_out is not False] * 2


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_and_int64_tensors(client: httpclient.InferenceServerClient, binary: bool) -> None:
    text = np.array([b"Hello", b"WORLD"], dtype=object)
    ids = np.array([4, 5, 6], np.int64)
    inputs = [
        httpclient.InferInput("TEXT", [2], "BYTES"),
        httpclient.InferInput("IDS", [3], "INT64"),
    ]
    inputs[0].set_data_from_numpy(text, binary_data=binary)
    inputs[1].set_data_from_numpy(ids, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary)
        for name in ("TEXT_LOWER", "IDS_DOUBLED", "IDS_SUM")
    ]
    result = client.infer("text_features", inputs, outputs=outputs)
    lower = [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy("TEXT_LOWER")]
    assert lower == [b"hello", b"world"]
    assert result.as_numpy("IDS_DOUBLED").tolist() == [8, 10, 12]
    assert result.as_numpy("IDS_SUM").tolist() == [15]


def test_compressed_requests_and_responses(client: httpclient.InferenceServerClient) -> None:
    # 32 rows: the outputs (2.5 KiB) are above the size the server starts compressing at
    batch = np.random.default_rng(2).standard_normal((32, 64)).astype(np.float32)
    inp = httpclient.InferInput("INPUT", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    ref = reference("dense_classifier", {"INPUT": batch})
    for request_alg, response_alg in (("gzip", "deflate"), ("deflate", "gzip")):
        result = client.infer(
            "dense_classifier",
            [inp],
            request_compression_algorithm=request_alg,
            response_compression_algorithm=response_alg,
        )
        np.testing.assert_allclose(result.as_numpy("PROBS"), ref["PROBS"], rtol=1e-5, atol=1e-6)


def test_async_infer_requests_all_answered(client: httpclient.InferenceServerClient) -> None:
    x = np.ones((1, 16), np.int32)
    inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for i in inputs:
        i.set_data_from_numpy(x)
    pending = [client.async_infer("simple", inputs, request_id=str(k)) for k in range(8)]
    for k, request in enumerate(pending):
        result = request.get_result()
        assert result.get_response()["id"] == str(k)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * x)


async def test_aio_client(server: ServerProcess) -> None:
    async with aioclient.InferenceServerClient(server.http_url) as aio:
        assert await aio.is_server_ready()
        x = np.full((2, 16), 7, np.int32)
        inputs = [aioclient.InferInput(n, [2, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(x)
        result = await aio.infer("simple", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * x)


def test_statistics(client: httpclient.InferenceServerClient) -> None:
    x = np.ones((1, 16), np.int32)
    inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for i in inputs:
        i.set_data_from_numpy(x)
    before = client.get_inference_statistics("simple")["model_stats"][0]
    client.infer("simple", inputs)
    stats = client.get_inference_statistics("simple", "1")["model_stats"][0]
    assert stats["name"] == "simple" and stats["version"] == "1"
    success = stats["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 1
    assert success["ns"] > 0 and stats["execution_count"] >= 1
    assert set(stats["inference_stats"]) >= {"success", "fail", "queue", "compute_infer"}
    every = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in every} == {"dense_classifier", "simple", "text_features"}


def test_errors(client: httpclient.InferenceServerClient) -> None:
    x = np.ones((1, 16), np.int32)
    good = httpclient.InferInput("INPUT0", [1, 16], "INT32")
    good.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as info:
        client.infer("no_such_model", [good])
    assert info.value.status() == "404"
    assert "unknown model" in info.value.message()

    wrong = httpclient.InferInput("INPUT1", [1, 16], "FP32")
    wrong.set_data_from_numpy(x.astype(np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("simple", [good, wrong])
    assert info.value.status() == "400"
    assert "data-type is 'FP32'" in info.value.message()

    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "404"

    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("no_such_model")
    assert info.value.status() == "400"

    with pytest.raises(InferenceServerException) as info:
        client.load_model("simple", config=json.dumps({"max_batch_size": 2}))
    assert info.value.status() == "503"
    assert "explicit model load" in info.value.message()

    assert client.get_cuda_shared_memory_status() == []
    client.unregister_cuda_shared_memory()
    with pytest.raises(InferenceServerException) as info:
        client.register_cuda_shared_memory("r", b"aGFuZGxl", 0, 8)
    assert info.value.status() == "501"
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory("r", "/volley_no_such_object", 8)
    assert info.value.status() == "400" and "unable to open" in info.value.message()
    assert client.is_server_live()  # unharmed
