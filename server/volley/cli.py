"""The ``volley`` command: ``serve``, ``repo check`` and ``perf``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model repository over gRPC (KServe v2 protocol)")
    p.add_argument(
        "--model-repository",
        action="append",
        type=Path,
        dest="model_repository",
        help="model repository directory (repeatable); env VOLLEY_MODEL_REPOSITORY",
    )
    p.add_argument("--grpc-address", help="address to bind (default 0.0.0.0)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8001; 0 = any free port)")
    p.add_argument("--model-control-mode", choices=["none", "poll", "explicit"])
    p.add_argument(
        "--load-model",
        action="append",
        default=[],
        help="with explicit control: model to load at start ('*' = all)",
    )
    p.add_argument("--strict-readiness", type=_bool, metavar="BOOL")
    p.add_argument(
        "--exit-timeout-secs",
        type=float,
        help="grace period for in-flight requests on shutdown (default 30)",
    )
    p.add_argument(
        "--strict-model-config",
        type=_bool,
        metavar="BOOL",
        help="disable auto-complete of model configs",
    )
    p.add_argument(
        "--inline-execution-us",
        type=int,
        help="run batches of models faster than this on the event loop (default 100; 0 = never)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    p.add_argument("--port-file", type=Path, help="write the bound gRPC port to this file")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _repo_parser(sub: Any) -> None:
    p = sub.add_parser("repo", help="model repository tools")
    rsub = p.add_subparsers(dest="repo_command", required=True)
    check = rsub.add_parser("check", help="validate a model repository")
    check.add_argument("path", type=Path)


def _perf_parser(sub: Any) -> None:
    from volley.loadgen.cli import add_arguments

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
    _perf_parser(sub)
    return parser


def _settings(args: argparse.Namespace) -> Any:
    from volley.config import ServerSettings

    overrides = {
        key: value
        for key, value in {
            "model_repository": args.model_repository,
            "grpc_address": args.grpc_address,
            "grpc_port": args.grpc_port,
            "model_control_mode": args.model_control_mode,
            "strict_readiness": args.strict_readiness,
            "exit_timeout_secs": args.exit_timeout_secs,
            "strict_model_config": args.strict_model_config,
            "log_level": args.log_level,
            "inline_execution_us": args.inline_execution_us,
        }.items()
        if value is not None
    }
    if args.no_uvloop:
        overrides["use_uvloop"] = False
    return ServerSettings(**overrides)


def _run_serve(args: argparse.Namespace) -> int:
    from volley.app import serve
    from volley.errors import VolleyError

    try:
        settings = _settings(args)
    except ValidationError as exc:
        print(f"volley serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.model_control_mode.value == "poll":
        print(
            "volley serve: --model-control-mode poll is not supported yet; use none (load all at "
            "start) or explicit (RepositoryModelLoad/Unload)",
            file=sys.stderr,
        )
        return 2
    if args.load_model and settings.model_control_mode.value != "explicit":
        print("volley serve: --load-model needs --model-control-mode explicit", file=sys.stderr)
        return 2

    try:
        if settings.use_uvloop:
            try:
                import uvloop

                uvloop.run(serve(settings, args.load_model, args.port_file))
                return 0
            except ImportError:
                pass
        asyncio.run(serve(settings, args.load_model, args.port_file))
    except VolleyError as exc:
        print(f"volley serve: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _run_repo(args: argparse.Namespace) -> int:
    from volley.repository.check import check_repository, format_problems

    problems = check_repository(args.path)
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
    if args.command == "perf":
        from volley.loadgen.cli import run

        return run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
