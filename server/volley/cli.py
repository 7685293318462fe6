"""The ``volley`` command: ``serve``, ``repo check`` and ``perf``."""

from __future__ import annotations

import argparse
import asyncio
import enum
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from volley.settings import ServerSettings, env_name, flag_name


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _add_setting(parser: argparse.ArgumentParser, name: str, annotation: Any, help: str) -> None:
    """One flag for one settings field, typed from its annotation."""
    kwargs: dict[str, Any] = {"dest": name, "help": f"{help} (env {env_name(name)})"}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        kwargs.update(action="append", type=item)
    elif annotation is bool:
        kwargs.update(type=_bool, metavar="BOOL")
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        kwargs.update(choices=[m.value for m in annotation])
    elif annotation in (int, float, Path):
        kwargs.update(type=annotation)
    parser.add_argument(flag_name(name), **kwargs)


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model repository over gRPC (KServe v2 protocol)")
    for name, info in ServerSettings.model_fields.items():
        _add_setting(p, name, info.annotation, info.description or "")
    p.add_argument(
        "--port-file",
        type=Path,
        help="write the bound gRPC port (and the HTTP port on a second line) to this file",
    )


def _repo_parser(sub: Any) -> None:
    p = sub.add_parser("repo", help="model repository tools")
    rsub = p.add_subparsers(dest="repo_command", required=True)
    check = rsub.add_parser("check", help="validate a model repository")
    check.add_argument("path", type=Path)


def _stream_parser(sub: Any) -> None:
    p = sub.add_parser(
        "stream", help="consume requests from a message broker, predict, publish the answers"
    )
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("-m", "--model", required=True, help="the model to serve")
    p.add_argument(
        "--source", required=True, help="nats://HOST:PORT/SUBJECT or kafka://HOST:PORT/TOPIC"
    )
    p.add_argument("--sink", required=True, help="where answers go (same scheme as --source)")
    p.add_argument(
        "--max-inflight", type=int, default=64, help="messages pulled and not yet answered"
    )
    p.add_argument("--log-level", default="INFO")


def _run_stream(args: argparse.Namespace) -> int:
    from volley.errors import VolleyError
    from volley.streamjob.worker import main as stream_main

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(
            stream_main(
                args.model_repository, args.model, args.source, args.sink, args.max_inflight
            )
        )
    except VolleyError as exc:
        print(f"volley stream: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _batch_parser(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="score a file of rows through a model offline (in-process, or a server with --url)",
    )
    p.add_argument("--model-repository", type=Path, help="load the model from here (no server)")
    p.add_argument("-m", "--model", required=True, help="the model to run")
    p.add_argument(
        "--input",
        type=Path,
        required=True,
        help="a .parquet, .csv, .jsonl or .npy file, or a directory of them (read in name "
        "order; a directory of <INPUT>.npy files feeds each file to its input)",
    )
    p.add_argument(
        "--output",
        type=Path,
        required=True,
        help="a .parquet file (a column per output plus 'row') or a .npy file (one output)",
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=INPUT",
        help="feed a column (a .npy file's array: 'file') to a model input; repeatable "
        "(default: the column named like the input)",
    )
    p.add_argument(
        "--url", metavar="HOST:PORT", help="send to a running server (KServe v2 gRPC) instead"
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        help="rows per request (default: the model's max_batch_size, or 64)",
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        help="rows per output part, the unit --resume skips (default: about 8192)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument(
        "--output-name",
        action="append",
        default=[],
        metavar="NAME",
        help="write only this output; repeatable (a .npy output needs one if the model has "
        "several)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted job: skip the chunks whose parts are already written",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--log-level", default="WARNING")


def _run_batch(args: argparse.Namespace) -> int:
    from volley.batchjob.errors import BatchError
    from volley.batchjob.fields import parse_mapping
    from volley.batchjob.runner import BatchOptions, run_batch
    from volley.errors import VolleyError

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        mapping = parse_mapping(args.map)
    except BatchError as exc:
        print(f"volley batch: {exc.message}", file=sys.stderr)
        return 2
    options = BatchOptions(
        input=args.input,
        output=args.output,
        model=args.model,
        repository=args.model_repository,
        url=args.url,
        mapping=mapping,
        batch_rows=args.batch_rows,
        chunk_rows=args.chunk_rows,
        concurrency=args.concurrency,
        output_names=args.output_name,
        resume=args.resume,
        quiet=args.quiet,
    )
    try:
        asyncio.run(run_batch(options))
    except (BatchError, VolleyError) as exc:
        print(f"volley batch: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "volley batch: interrupted; the chunks written so far are kept: rerun with --resume",
            file=sys.stderr,
        )
        return 130
    return 0


def _perf_parser(sub: Any) -> None:
    from volley_perf.cli import add_arguments

    p = sub.add_parser(
        "perf", help="benchmark a KServe v2 gRPC server (Volley, Triton, MLServer, KServe)"
    )
    add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``volley`` command."""
    parser = argparse.ArgumentParser(prog="volley", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _repo_parser(sub)
    _stream_parser(sub)
    _batch_parser(sub)
    _perf_parser(sub)
    return parser


def _settings(args: argparse.Namespace) -> ServerSettings:
    """Settings from the environment, overridden by the flags given."""
    overrides = {
        name: getattr(args, name)
        for name in ServerSettings.model_fields
        if getattr(args, name, None) is not None
    }
    return ServerSettings(**overrides)


def _run_serve(args: argparse.Namespace) -> int:
    from volley.app import serve
    from volley.errors import VolleyError

    try:
        settings = _settings(args)
    except ValidationError as exc:
        print(f"volley serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    from volley.telemetry import logs

    logs.configure(settings.log_level, settings.log_format.value)
    if settings.load_model and settings.model_control_mode.value != "explicit":
        print("volley serve: --load-model needs --model-control-mode explicit", file=sys.stderr)
        return 2

    try:
        if settings.use_uvloop:
            try:
                import uvloop

                uvloop.run(serve(settings, args.port_file))
                return 0
            except ImportError:
                pass
        asyncio.run(serve(settings, args.port_file))
    except VolleyError as exc:
        print(f"volley serve: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _run_repo(args: argparse.Namespace) -> int:
    from volley.backends import BackendInspector
    from volley.repository.check import check_repository, format_problems

    problems = check_repository(args.path, BackendInspector())
    if problems:
        print(format_problems(problems))
        print(f"{len(problems)} problem(s) found in {args.path}")
        return 1
    print(f"{args.path}: OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``volley`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    if args.command == "repo":
        return _run_repo(args)
    if args.command == "stream":
        return _run_stream(args)
    if args.command == "batch":
        return _run_batch(args)
    if args.command == "perf":
        from volley_perf.cli import run

        return run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
