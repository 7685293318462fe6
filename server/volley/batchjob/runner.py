"""A batch job from start to end: read chunks, score them concurrently, write parts, combine.

The input is read on a worker thread one chunk ahead of need; each chunk is cut into requests
of ``batch_rows`` rows, and at most ``concurrency`` requests are in flight at once, so the
model's dynamic batcher sees a steady queue while memory stays bounded by a few chunks. A bad
input row or a failed request stops the reading; the chunks already in flight finish and are
written, so ``--resume`` continues from there.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from volley.batchjob.chunks import Chunk, chunked
from volley.batchjob.errors import BatchError
from volley.batchjob.fields import Field, ModelInfo, plan_fields, select_outputs
from volley.batchjob.progress import Progress, Summary
from volley.batchjob.sinks import PartSink, output_format
from volley.batchjob.sources import open_source
from volley.batchjob.targets import Target, in_process, remote

#: Rows per request when the model does not batch (or does not say how much).
DEFAULT_BATCH_ROWS = 64
#: About this many rows per chunk (a part file, the unit ``--resume`` skips).
DEFAULT_CHUNK_ROWS = 8192
#: Most rows a reader parses at a time.
MAX_PIECE_ROWS = 65536


@dataclass
class BatchOptions:
    """The arguments of ``volley batch``."""

    input: Path
    output: Path
    model: str
    repository: Path | None = None
    url: str | None = None
    #: {column: model input} (``--map``).
    mapping: dict[str, str] = field(default_factory=dict)
    #: Rows per request; None: the model's max_batch_size, or DEFAULT_BATCH_ROWS.
    batch_rows: int | None = None
    #: Rows per chunk; None: about DEFAULT_CHUNK_ROWS, a multiple of ``batch_rows``.
    chunk_rows: int | None = None
    concurrency: int = 8
    output_names: list[str] = field(default_factory=list)
    resume: bool = False
    quiet: bool = False


def sizes(options: BatchOptions, info: ModelInfo) -> tuple[int, int]:
    """Rows per request and rows per chunk."""
    limit = info.max_batch_size
    batch = options.batch_rows or (limit if limit > 0 else DEFAULT_BATCH_ROWS)
    if batch < 1:
        raise BatchError("--batch-rows must be at least 1")
    if limit > 0 and batch > limit:
        raise BatchError(
            f"--batch-rows {batch} is more than model '{info.name}' takes in one request "
            f"(max_batch_size {limit})"
        )
    chunk = options.chunk_rows or batch * max(1, -(-DEFAULT_CHUNK_ROWS // batch))
    if chunk < 1:
        raise BatchError("--chunk-rows must be at least 1")
    return batch, chunk


class _Job:
    """The scoring loop of one job."""

    def __init__(
        self,
        target: Target,
        fields: Sequence[Field],
        outputs: Sequence[str],
        sink: PartSink,
        progress: Progress,
        summary: Summary,
        batch_rows: int,
        concurrency: int,
    ) -> None:
        self.target = target
        self.fields = list(fields)
        self.outputs = list(outputs)
        self.sink = sink
        self.progress = progress
        self.summary = summary
        self.batch_rows = batch_rows
        self.requests = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.failure: BaseException | None = None

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc

    async def run(self, chunks: Iterator[Chunk], chunk_rows: int) -> None:
        """Score every chunk not already done; raise the first failure after the chunks in
        flight are written."""
        per_chunk = -(-chunk_rows // self.batch_rows)
        window = asyncio.Semaphore(-(-self.concurrency // per_chunk) + 1)
        tasks: set[asyncio.Task[None]] = set()
        while self.failure is None:
            await window.acquire()
            try:
                chunk = await asyncio.to_thread(next, chunks, None)
            except Exception as exc:
                window.release()
                self.summary.errors += 1
                self._fail(exc)
                break
            if chunk is None:
                window.release()
                break
            self.summary.chunks += 1
            if self.sink.done(chunk):
                self.summary.skipped_chunks += 1
                self.summary.skipped_rows += chunk.rows
                self.progress.advance(chunk.rows, skipped=True)
                window.release()
                continue
            task = asyncio.ensure_future(self._score(chunk, window))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        if self.failure is not None:
            raise self.failure

    async def _score(self, chunk: Chunk, window: asyncio.Semaphore) -> None:
        try:
            spans = [
                (start, min(start + self.batch_rows, chunk.rows))
                for start in range(0, chunk.rows, self.batch_rows)
            ]
            answers = await asyncio.gather(
                *(self._request(chunk, a, b) for a, b in spans), return_exceptions=True
            )
            results: list[dict[str, np.ndarray]] = []
            for answer in answers:
                if isinstance(answer, BaseException):
                    self.summary.errors += 1
                    self._fail(answer)
                else:
                    results.append(answer)
            if len(results) == len(answers):
                await asyncio.to_thread(self.sink.write, chunk, results)
                self.summary.scored_rows += chunk.rows
                self.progress.advance(chunk.rows)
        except Exception as exc:
            self._fail(exc)
        finally:
            window.release()

    async def _request(self, chunk: Chunk, start: int, stop: int) -> dict[str, np.ndarray]:
        rows = f"rows {chunk.first_row + start}-{chunk.first_row + stop - 1}"
        inputs = [(f.input, f.datatype, chunk.arrays[f.input][start:stop]) for f in self.fields]
        async with self.requests:
            try:
                answer = await self.target.infer(f"{chunk.index}-{start}", inputs, self.outputs)
            except BatchError as exc:
                raise BatchError(
                    f"inference failed for {rows} (chunk {chunk.index}): {exc.message}"
                ) from exc
        for name in self.outputs:
            array = answer.get(name)
            if array is None or array.ndim == 0 or array.shape[0] != stop - start:
                got = "nothing" if array is None else f"shape {list(array.shape)}"
                raise BatchError(
                    f"inference for {rows} (chunk {chunk.index}) returned {got} for output "
                    f"'{name}', not one row per input row: leave it out with --output-name"
                )
        return answer


def _check_paths(options: BatchOptions) -> None:
    if (options.repository is None) == (options.url is None):
        raise BatchError("give either --model-repository (run the model here) or --url")
    if not options.input.exists():
        raise BatchError(f"--input {options.input}: no such file or directory")
    if options.input.is_dir() and options.output.resolve().parent == options.input.resolve():
        raise BatchError("--output must not be inside the --input directory")
    if options.concurrency < 1:
        raise BatchError("--concurrency must be at least 1")
    output_format(options.output)


async def run_batch(options: BatchOptions, stderr: TextIO | None = None) -> Summary:
    """Run a job to its end: the output file is complete when this returns; a ``BatchError``
    says why it is not (the parts written so far are kept for ``--resume``)."""
    _check_paths(options)
    stream = sys.stderr if stderr is None else stderr
    target: AbstractAsyncContextManager[Target]
    if options.url is not None:
        target = remote(options.url, options.model)
    else:
        assert options.repository is not None
        target = in_process(options.repository, options.model)
    async with target as model:
        return await _run(options, model, stream)


async def _run(options: BatchOptions, target: Target, stream: TextIO) -> Summary:
    info = target.info
    fmt = output_format(options.output)
    source = open_source(options.input, {t.name for t in info.inputs} | set(options.mapping))
    fields = plan_fields(source.columns, info.inputs, options.mapping)
    outputs = select_outputs(info.outputs, options.output_names, fmt)
    batch_rows, chunk_rows = sizes(options, info)
    fingerprint: dict[str, Any] = {
        "model": info.name,
        "versions": info.versions,
        "input": str(options.input.resolve()),
        "chunk_rows": chunk_rows,
        "columns": {f.input: f.column for f in fields},
        "outputs": [t.name for t in outputs],
        "format": fmt,
    }
    sink = PartSink(options.output, outputs, fingerprint, resume=options.resume)
    summary = Summary()
    progress = Progress(source.total_rows, None if options.quiet else stream)
    job = _Job(
        target,
        fields,
        [t.name for t in outputs],
        sink,
        progress,
        summary,
        batch_rows,
        options.concurrency,
    )
    pieces = source.pieces(fields, min(chunk_rows, MAX_PIECE_ROWS))
    started = time.monotonic()
    try:
        await job.run(chunked(pieces, chunk_rows), chunk_rows)
        await asyncio.to_thread(sink.finish, summary.chunks)
    except BaseException:
        sink.discard_if_empty()
        raise
    finally:
        progress.close()
        summary.rows = summary.scored_rows + summary.skipped_rows
        summary.seconds = time.monotonic() - started
        stream.write(f"volley batch: {summary.line()}\n")
        stream.flush()
    return summary
