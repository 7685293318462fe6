"""Start ``volley serve`` in a subprocess on 127.0.0.1 and stop it with SIGTERM.

Imports nothing from ``volley``: the compat tests load ``tritonclient``, whose generated
protobuf modules cannot share a process with Volley's (both define package ``inference``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_REPOSITORY = ROOT / "model_repository"


class ServerProcess:
    """A running ``volley serve``; ``url`` is ``127.0.0.1:PORT`` (gRPC), ``http_url`` the same
    for HTTP (empty when ``--allow-http false`` is passed)."""

    def __init__(
        self, repository: Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="volley-test-")
        port_file = Path(self._dir.name) / "port"
        self.log_path = Path(self._dir.name) / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "volley.cli",
            "serve",
            "--model-repository",
            str(repository),
            "--grpc-address",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--http-address",
            "127.0.0.1",
            "--http-port",
            "0",
            "--port-file",
            str(port_file),
            "--exit-timeout-secs",
            "5",
            *extra_args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"volley serve exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"volley serve did not start in 60 s:\n{self.log()}")
            time.sleep(0.05)
        # the gRPC port, then the HTTP port when HTTP is served
        ports = [int(p) for p in port_file.read_text().split()]
        self.port = ports[0]
        self.url = f"127.0.0.1:{self.port}"
        self.http_port = ports[1] if len(ports) > 1 else 0
        self.http_url = f"127.0.0.1:{self.http_port}" if self.http_port else ""

    def log(self) -> str:
        """Everything the server printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, wait, and return the exit code (kills it if it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self._dir.cleanup()
        return code
