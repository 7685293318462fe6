"""tritonclient's system shared memory utilities (clients we did not write) against Volley,
over gRPC and HTTP: inputs read from the client's regions, outputs written into them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from server_process import ServerProcess

BYTES = 2 * 16 * 4  # simple: INT32 [2, 16]


@pytest.fixture(params=("grpc", "http"))
def client(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Any]:
    if request.param == "grpc":
        c: Any = grpcclient.InferenceServerClient(server.url)
    else:
        c = httpclient.InferenceServerClient(server.http_url)
    c.unregister_system_shared_memory()
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def regions() -> Iterator[dict[str, Any]]:
    tag = f"{os.getpid()}_{id(object())}"
    handles = {
        "in": shm.create_shared_memory_region("volley_in", f"/volley_in_{tag}", 2 * BYTES),
        "out": shm.create_shared_memory_region("volley_out", f"/volley_out_{tag}", 2 * BYTES),
    }
    keys = {"in": f"/volley_in_{tag}", "out": f"/volley_out_{tag}"}
    yield {"handles": handles, "keys": keys}
    for handle in handles.values():
        shm.destroy_shared_memory_region(handle)


def _module(client: Any) -> Any:
    return grpcclient if isinstance(client, grpcclient.InferenceServerClient) else httpclient


def test_inputs_and_outputs_through_shared_memory(client: Any, regions: dict[str, Any]) -> None:
    mod = _module(client)
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    handles, keys = regions["handles"], regions["keys"]
    shm.set_shared_memory_region(handles["in"], [a, b])
    client.register_system_shared_memory("input_data", keys["in"], 2 * BYTES)
    client.register_system_shared_memory("output_data", keys["out"], 2 * BYTES)

    status = client.get_system_shared_memory_status()
    listed = status if isinstance(status, list) else list(status.regions.values())
    names = {r["name"] if isinstance(r, dict) else r.name for r in listed}
    assert names == {"input_data", "output_data"}

    inputs = [
        mod.InferInput("INPUT0", [2, 16], "INT32"),
        mod.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_shared_memory("input_data", BYTES)
    inputs[1].set_shared_memory("input_data", BYTES, offset=BYTES)
    outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output_data", BYTES)
    outputs[1].set_shared_memory("output_data", BYTES, offset=BYTES)
    result = client.infer("simple", inputs, outputs=outputs)

    out0 = result.get_output("OUTPUT0")
    shape0 = out0["shape"] if isinstance(out0, dict) else list(out0.shape)
    assert shape0 == [2, 16]
    sum_ = shm.get_contents_as_numpy(handles["out"], np.int32, [2, 16])
    diff = shm.get_contents_as_numpy(handles["out"], np.int32, [2, 16], offset=BYTES)
    np.testing.assert_array_equal(sum_, a + b)
    np.testing.assert_array_equal(diff, a - b)

    # the client rewrites its inputs in place and asks again: the server reads the region anew
    shm.set_shared_memory_region(handles["in"], [b, a])
    client.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(handles["out"], np.int32, [2, 16], offset=BYTES), b - a
    )

    client.unregister_system_shared_memory("input_data")
    with pytest.raises(InferenceServerException, match="input_data"):
        client.infer("simple", inputs, outputs=outputs)


def test_registration_is_checked(client: Any, regions: dict[str, Any]) -> None:
    keys = regions["keys"]
    with pytest.raises(InferenceServerException, match="exceeds"):
        client.register_system_shared_memory("big", keys["in"], 4 * BYTES)
    with pytest.raises(InferenceServerException, match="key"):
        client.register_system_shared_memory("odd", "/no/such/key", 8)
    with pytest.raises(InferenceServerException):
        client.register_system_shared_memory("missing", "/volley_no_such_region", 8)
    client.register_system_shared_memory("r", keys["in"], BYTES)
    with pytest.raises(InferenceServerException, match="already registered"):
        client.register_system_shared_memory("r", keys["in"], BYTES)

    mod = _module(client)
    inputs = [
        mod.InferInput("INPUT0", [2, 16], "INT32"),
        mod.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_shared_memory("r", BYTES)
    inputs[1].set_shared_memory("r", BYTES, offset=BYTES)  # past the registered window
    with pytest.raises(InferenceServerException, match="outside region 'r'"):
        client.infer("simple", inputs)


def test_cuda_shared_memory_is_refused_clearly(client: Any) -> None:
    client.unregister_cuda_shared_memory()  # nothing to release: a no-op, as cleanups expect
    status = client.get_cuda_shared_memory_status()
    assert (status if isinstance(status, list) else list(status.regions)) == []
    with pytest.raises(InferenceServerException, match="CUDA shared memory"):
        client.register_cuda_shared_memory("r", b"aGFuZGxl", 0, 8)
