"""The stream worker: pull messages, run them through the in-process service, publish, ack.

Delivery is at least once: a message is acknowledged only after its prediction (or its error
record) has been published and the broker confirmed it. A worker that dies loses nothing: the
unacknowledged messages are delivered again when it (or another worker) restarts; with NATS
JetStream the published answers carry ``Nats-Msg-Id`` = the request id, so a repeated answer
within the stream's duplicate window is dropped by the broker. Backpressure: the worker pulls
no more than ``max_inflight`` messages at a time, so a slow model stops the pulling, not the
memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from volley.errors import VolleyError
from volley.serving.lifecycle import ModelManager
from volley.serving.registry import Registry
from volley.serving.service import InferenceService
from volley.streamjob.messages import error_message, request_from_message, response_message

log = logging.getLogger("volley.stream")


@dataclass(slots=True)
class Message:
    """One consumed message and how to acknowledge it."""

    id: str
    body: bytes
    content_type: str
    key: str
    ack: Callable[[], Any]


class Broker(Protocol):
    """A source and sink of messages."""

    async def connect(self) -> None: ...

    async def fetch(self, limit: int, timeout_s: float) -> list[Message]: ...

    async def publish(self, body: bytes, message_id: str, key: str) -> None: ...

    async def close(self) -> None: ...


class NatsBroker:
    """NATS JetStream: a durable pull consumer on the source, confirmed publishes on the sink."""

    def __init__(self, source: str, sink: str, durable: str) -> None:
        src, dst = urlsplit(source), urlsplit(sink)
        self._server = f"nats://{src.hostname or '127.0.0.1'}:{src.port or 4222}"
        self._subject = src.path.lstrip("/")
        self._sink_subject = dst.path.lstrip("/")
        self._durable = durable
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None

    async def connect(self) -> None:
        import nats
        from nats.js.errors import NotFoundError

        self._nc = await nats.connect(self._server, connect_timeout=5)
        self._js = self._nc.jetstream()
        try:
            await self._js.find_stream_name_by_subject(self._subject)
        except NotFoundError:
            name = "VOLLEY_" + "".join(c if c.isalnum() else "_" for c in self._subject).upper()
            await self._js.add_stream(name=name, subjects=[self._subject])
        self._sub = await self._js.pull_subscribe(self._subject, durable=self._durable)

    async def fetch(self, limit: int, timeout_s: float) -> list[Message]:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            msgs = await self._sub.fetch(batch=limit, timeout=timeout_s)
        except (NatsTimeout, asyncio.TimeoutError):
            return []
        out = []
        for m in msgs:
            headers = m.headers or {}
            meta = m.metadata
            ident = headers.get("Nats-Msg-Id") or f"{meta.stream}-{meta.sequence.stream}"
            out.append(
                Message(
                    id=ident,
                    body=m.data,
                    content_type=headers.get("Content-Type", "application/json"),
                    key=headers.get("Volley-Key", ""),
                    ack=m.ack,
                )
            )
        return out

    async def publish(self, body: bytes, message_id: str, key: str) -> None:
        headers = {"Nats-Msg-Id": message_id, "Content-Type": "application/json"}
        if key:
            headers["Volley-Key"] = key
        await self._js.publish(self._sink_subject, body, headers=headers, timeout=10)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


class KafkaBroker:
    """Kafka with confluent-kafka: offsets are committed only after the answers are delivered."""

    def __init__(self, source: str, sink: str, group: str) -> None:
        src, dst = urlsplit(source), urlsplit(sink)
        self._servers = f"{src.hostname or '127.0.0.1'}:{src.port or 9092}"
        self._topic = src.path.lstrip("/")
        self._sink_topic = dst.path.lstrip("/")
        self._group = group
        self._consumer: Any = None
        self._producer: Any = None

    async def connect(self) -> None:
        try:
            from confluent_kafka import Consumer, Producer
        except ImportError as exc:
            raise VolleyError("a kafka:// source needs the confluent-kafka package") from exc
        self._consumer = Consumer(
            {
                "bootstrap.servers": self._servers,
                "group.id": self._group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self._consumer.subscribe([self._topic])
        self._producer = Producer({"bootstrap.servers": self._servers, "enable.idempotence": True})

    async def fetch(self, limit: int, timeout_s: float) -> list[Message]:
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(None, self._consumer.consume, limit, timeout_s)
        out = []
        for record in records:
            if record.error():
                log.warning("kafka: %s", record.error())
                continue
            headers = dict(record.headers() or [])
            out.append(
                Message(
                    id=f"{record.topic()}-{record.partition()}-{record.offset()}",
                    body=record.value(),
                    content_type=(headers.get("content-type") or b"application/json").decode(),
                    key=(record.key() or b"").decode(errors="replace"),
                    ack=self._committer(record),
                )
            )
        return out

    def _committer(self, record: Any) -> Callable[[], Any]:
        async def commit() -> None:
            self._consumer.commit(message=record, asynchronous=False)

        return commit

    async def publish(self, body: bytes, message_id: str, key: str) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def delivered(err: Any, _msg: Any) -> None:
            if err is None:
                loop.call_soon_threadsafe(done.set_result, None)
            else:
                loop.call_soon_threadsafe(done.set_exception, VolleyError(str(err)))

        self._producer.produce(self._sink_topic, body, key=key or message_id, on_delivery=delivered)
        await loop.run_in_executor(None, self._producer.flush, 10)
        await done

    async def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
        if self._consumer is not None:
            self._consumer.close()


def open_broker(source: str, sink: str, model: str) -> Broker:
    """The broker of ``--source``/``--sink`` URLs (same scheme on both)."""
    scheme, sink_scheme = urlsplit(source).scheme, urlsplit(sink).scheme
    if scheme != sink_scheme:
        raise VolleyError(f"--source is {scheme}:// but --sink is {sink_scheme}://")
    if scheme == "nats":
        return NatsBroker(source, sink, durable=f"volley-{model}")
    if scheme == "kafka":
        return KafkaBroker(source, sink, group=f"volley-{model}")
    raise VolleyError(f"unsupported broker '{source}': use nats:// or kafka://")


@dataclass
class StreamStats:
    """What a worker did."""

    answered: int = 0
    failed: int = 0


async def run_stream(
    repository: Path,
    model: str,
    broker: Broker,
    *,
    max_inflight: int = 64,
    stop: asyncio.Event | None = None,
    idle_exit_s: float | None = None,
) -> StreamStats:
    """Serve ``model`` to the broker until ``stop`` is set (or ``idle_exit_s`` with no message)."""
    registry = Registry()
    manager = ModelManager([repository], registry)
    service = InferenceService(registry, manager, explicit_control=True)
    await manager.load(model)
    service.live = True
    stats = StreamStats()
    stop = stop or asyncio.Event()
    slots = asyncio.Semaphore(max_inflight)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(msg: Message) -> None:
        try:
            try:
                request = request_from_message(
                    msg.body, msg.content_type, model, msg.id, time.monotonic_ns()
                )
                body = response_message(await service.infer(request))
                stats.answered += 1
            except VolleyError as exc:
                body = error_message(msg.id, model, exc.message)
                stats.failed += 1
            await broker.publish(body, msg.id, msg.key)
            await msg.ack()
        except Exception:
            log.exception("message %s not answered; it will be delivered again", msg.id)
        finally:
            slots.release()

    await broker.connect()
    last_message = time.monotonic()
    try:
        while not stop.is_set():
            msgs = await broker.fetch(max(max_inflight - len(tasks), 1), 0.5)
            if not msgs:
                if idle_exit_s is not None and time.monotonic() - last_message > idle_exit_s:
                    break
                continue
            last_message = time.monotonic()
            for msg in msgs:
                await slots.acquire()
                task = asyncio.ensure_future(handle(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await broker.close()
        await manager.shutdown()
    return stats


async def main(
    repository: Path, model: str, source: str, sink: str, max_inflight: int
) -> StreamStats:
    """``volley stream``: run until SIGTERM/SIGINT, finishing the messages in flight."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    broker = open_broker(source, sink, model)
    stats = await run_stream(repository, model, broker, max_inflight=max_inflight, stop=stop)
    log.info("stream stopped: %d answered, %d failed", stats.answered, stats.failed)
    return stats
