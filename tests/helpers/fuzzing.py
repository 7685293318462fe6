"""Malformed ``ModelInferRequest`` bytes for fuzzing a server, from a seed (replayable)."""

from __future__ import annotations

import asyncio
import random
import struct

import grpc
import numpy as np

from volley._proto.inference import grpc_service_pb2 as pb

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES", "", "FP8", "int32", "\x00"]  # fmt: skip
MODELS = ["dense_classifier", "simple", "text_features", "", "nope", "simple/../x"]
VERSIONS = ["", "1", "2", "0", "-1", "²", "99999999999999999999", "latest", " 1"]
NAMES = ["INPUT", "INPUT0", "INPUT1", "TEXT", "IDS", "", "X", "INPUT0 "]
PARAMS = ["priority", "timeout", "sequence_id", "triton_x", "binary_data_output", "headers",
          "custom", "shared_memory_region", "classification"]  # fmt: skip
DIMS = [0, 1, 2, 3, 4, 16, 64, -1, -5, 2**31, 2**62, 10**9]


def good_simple(rng: random.Random) -> tuple[bytes, np.ndarray]:
    """A valid ``simple`` request and the OUTPUT0 it must produce."""
    a = np.array([rng.randrange(-1000, 1000) for _ in range(16)], np.int32).reshape(1, 16)
    b = np.array([rng.randrange(-1000, 1000) for _ in range(16)], np.int32).reshape(1, 16)
    msg = pb.ModelInferRequest(model_name="simple", id="good")
    for name, x in (("INPUT0", a), ("INPUT1", b)):
        msg.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        msg.raw_input_contents.append(x.tobytes())
    return msg.SerializeToString(), a + b


def malformed(rng: random.Random) -> bytes:
    """One malformed (or occasionally valid) request, serialized; sometimes plain garbage."""
    kind = rng.random()
    if kind < 0.08:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    msg = pb.ModelInferRequest(model_name=rng.choice(MODELS), model_version=rng.choice(VERSIONS))
    msg.id = rng.choice(["", "x", "é" * rng.randrange(0, 50)])
    raw = rng.random() < 0.7
    for _ in range(rng.randrange(0, 4)):
        datatype = rng.choice(DATATYPES)
        shape = [rng.choice(DIMS) for _ in range(rng.randrange(0, 4))]
        tensor = msg.inputs.add(name=rng.choice(NAMES), datatype=datatype, shape=shape)
        if rng.random() < 0.2:
            tensor.parameters[rng.choice(PARAMS)].int64_param = rng.randrange(-5, 5)
        if raw:
            if rng.random() < 0.5 and datatype == "BYTES":
                items = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 6)))
                         for _ in range(rng.randrange(0, 4))]  # fmt: skip
                body = b"".join(struct.pack("<I", len(i)) + i for i in items)
                if rng.random() < 0.3:
                    body = body[: rng.randrange(0, len(body) + 1)]
                msg.raw_input_contents.append(body)
            else:
                msg.raw_input_contents.append(
                    bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 64, 256])))
                )
        elif rng.random() < 0.7:
            field = rng.choice(["int_contents", "fp32_contents", "bytes_contents", "bool_contents",
                                "int64_contents", "uint64_contents"])  # fmt: skip
            values = getattr(tensor.contents, field)
            for _ in range(rng.randrange(0, 20)):
                if field == "bytes_contents":
                    values.append(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 4))))
                elif field == "fp32_contents":
                    values.append(rng.uniform(-1e30, 1e30))
                elif field == "bool_contents":
                    values.append(rng.random() < 0.5)
                elif field == "uint64_contents":
                    values.append(rng.randrange(0, 2**64))
                else:
                    values.append(rng.randrange(-(2**31), 2**31))
    if rng.random() < 0.2 and raw:
        msg.raw_input_contents.append(b"extra")
    for _ in range(rng.randrange(0, 3)):
        param = msg.parameters[rng.choice(PARAMS)]
        choice = rng.randrange(4)
        if choice == 0:
            param.int64_param = rng.choice([-1, 0, 1, 2**62, 10**15])
        elif choice == 1:
            param.uint64_param = rng.randrange(0, 2**64)
        elif choice == 2:
            param.string_param = "x"
        else:
            param.bool_param = True
    for _ in range(rng.randrange(0, 3)):
        out = msg.outputs.add(name=rng.choice(["PROBS", "OUTPUT0", "OUTPUT0", "NOPE", ""]))
        if rng.random() < 0.2:
            out.parameters[rng.choice(PARAMS)].int64_param = 1
    data = msg.SerializeToString()
    if rng.random() < 0.05 and data:
        cut = rng.randrange(len(data))
        data = data[:cut] + bytes([rng.randrange(256)]) + data[cut + 1 :]
    return data


METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def fuzz(url: str, seed: int, count: int, concurrency: int = 64) -> dict[str, int]:
    rng = random.Random(seed)
    codes: dict[str, int] = {}
    bad_good: list[str] = []
    async with grpc.aio.insecure_channel(
        url, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        call = channel.unary_unary(METHOD)  # raw bytes both ways
        queue: asyncio.Queue[tuple[bytes, np.ndarray | None] | None] = asyncio.Queue(256)

        async def produce() -> None:
            for i in range(count):
                if i % 10 == 0:
                    body, expected = good_simple(rng)
                    await queue.put((body, expected))
                else:
                    await queue.put((malformed(rng), None))
            for _ in range(concurrency):
                await queue.put(None)

        async def consume() -> None:
            while (item := await queue.get()) is not None:
                body, expected = item
                try:
                    reply = await call(body, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    name = exc.code().name
                    codes[name] = codes.get(name, 0) + 1
                    if expected is not None:
                        bad_good.append(f"{name}: {exc.details()}")
                    continue
                codes["OK"] = codes.get("OK", 0) + 1
                if expected is not None:
                    response = pb.ModelInferResponse.FromString(reply)
                    got = np.frombuffer(response.raw_output_contents[0], np.int32)
                    if not np.array_equal(got, expected.reshape(-1)):
                        bad_good.append("wrong answer")

        await asyncio.gather(produce(), *(consume() for _ in range(concurrency)))
    assert not bad_good, (seed, bad_good[:5])
    return codes
