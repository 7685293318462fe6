"""tritonclient's sequence API (sequence_id / sequence_start / sequence_end), unary and
streaming, against a stateful model served by Volley (a client we did not write)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from sequence_models import write_accumulator
from tritonclient.utils import InferenceServerException

from server_process import ServerProcess


@pytest.fixture(scope="module", params=("native", "grpcio"))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    repo: Path = tmp_path_factory.mktemp("sequence_repo")
    write_accumulator(repo, "simple_sequence", max_batch_size=8)
    write_accumulator(repo, "simple_string_sequence", max_batch_size=8, corrid="TYPE_STRING")
    proc = ServerProcess(repo, env={"VOLLEY_GRPC_TRANSPORT": str(request.param)})
    yield proc
    assert proc.stop() == 0, proc.log()


def inputs(mod: Any, value: int) -> list[Any]:
    tensor = mod.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.int32))
    return [tensor]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sync_sequences_interleaved(server: ServerProcess, protocol: str) -> None:
    mod: Any = grpcclient if protocol == "grpc" else httpclient
    client = mod.InferenceServerClient(server.url if protocol == "grpc" else server.http_url)
    values = [11, 7, 5, 3, 2, 0, 1]
    got: dict[Any, list[int]] = {1000: [], "one-thousand-one": []}
    for i, value in enumerate(values):
        for ident, sign in ((1000, 1), ("one-thousand-one", -1)):
            result = client.infer(
                "simple_sequence" if sign > 0 else "simple_string_sequence",
                inputs(mod, sign * value),
                sequence_id=ident,
                sequence_start=i == 0,
                sequence_end=i == len(values) - 1,
            )
            got[ident].append(int(result.as_numpy("OUTPUT")[0][0]))
    assert got[1000] == list(np.cumsum(values))
    assert got["one-thousand-one"] == list(-np.cumsum(values))
    with pytest.raises(InferenceServerException, match="START flag"):
        client.infer("simple_sequence", inputs(mod, 1), sequence_id=1000)
    with pytest.raises(InferenceServerException, match="numeric correlation ID"):
        client.infer("simple_sequence", inputs(mod, 1), sequence_id="abc", sequence_start=True)
    assert (
        int(
            client.infer(
                "simple_sequence", inputs(mod, 4), sequence_id=1000, sequence_start=True
            ).as_numpy("OUTPUT")[0][0]
        )
        == 4
    )  # the model still serves
    client.close()


def test_stream_sequences(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.url)
    results: queue.Queue[Any] = queue.Queue()
    done = threading.Event()

    def callback(result: Any, error: Any) -> None:
        results.put(error if error is not None else result)

    client.start_stream(callback=callback)
    values = [1, 2, 3, 4, 5]
    for i, value in enumerate(values):
        for ident in (2000, 2001):
            client.async_stream_infer(
                "simple_sequence",
                inputs(grpcclient, value * (ident - 1999)),
                request_id=f"{ident}-{i}",
                sequence_id=ident,
                sequence_start=i == 0,
                sequence_end=i == len(values) - 1,
            )
    client.stop_stream()
    done.set()
    sums: dict[int, list[int]] = {2000: [], 2001: []}
    while not results.empty():
        item = results.get()
        assert not isinstance(item, InferenceServerException), item
        ident = int(item.get_response().id.split("-")[0])
        sums[ident].append(int(item.as_numpy("OUTPUT")[0][0]))
    assert sums[2000] == [1, 3, 6, 10, 15]
    assert sums[2001] == [2, 6, 12, 20, 30]
    client.close()
