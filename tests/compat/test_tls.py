"""TLS and mutual TLS with tritonclient: ``--grpc-use-ssl`` selects the grpcio transport."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from server_process import EXAMPLE_REPOSITORY, ServerProcess

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
                 "-out", f"{name}.crt", cwd=d)  # fmt: skip
    return d


def _serve(pki: Path, mutual: bool) -> ServerProcess:
    args = [
        "--grpc-use-ssl", "true",
        "--grpc-server-cert", str(pki / "server.crt"),
        "--grpc-server-key", str(pki / "server.key"),
        "--grpc-root-cert", str(pki / "ca.crt"),
    ]  # fmt: skip
    if mutual:
        args += ["--grpc-use-ssl-mutual", "true"]
    return ServerProcess(EXAMPLE_REPOSITORY, extra_args=args)


@pytest.fixture(scope="module")
def tls_server(pki: Path) -> Iterator[ServerProcess]:
    server = _serve(pki, mutual=False)
    yield server
    assert server.stop() == 0, server.log()


def _infer(client: grpcclient.InferenceServerClient) -> np.ndarray:
    x = grpcclient.InferInput("INPUT", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    return client.infer("dense_classifier", [x]).as_numpy("PROBS")


def test_tls_with_tritonclient(tls_server: ServerProcess, pki: Path) -> None:
    assert "gRPC transport: grpcio (TLS is configured" in tls_server.log()
    client = grpcclient.InferenceServerClient(
        f"localhost:{tls_server.port}", ssl=True, root_certificates=str(pki / "ca.crt")
    )
    assert client.is_server_ready()
    assert _infer(client).shape == (1, 10)


def test_plaintext_to_a_tls_port_fails(tls_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(tls_server.url)
    with pytest.raises(InferenceServerException):
        client.is_server_live(client_timeout=3)


def test_mutual_tls_needs_a_client_certificate(pki: Path) -> None:
    server = _serve(pki, mutual=True)
    try:
        url = f"localhost:{server.port}"
        anonymous = grpcclient.InferenceServerClient(
            url, ssl=True, root_certificates=str(pki / "ca.crt")
        )
        with pytest.raises(InferenceServerException):
            anonymous.is_server_live(client_timeout=3)
        known = grpcclient.InferenceServerClient(
            url,
            ssl=True,
            root_certificates=str(pki / "ca.crt"),
            private_key=str(pki / "client.key"),
            certificate_chain=str(pki / "client.crt"),
        )
        assert known.is_server_live()
        assert _infer(known).shape == (1, 10)
    finally:
        assert server.stop() == 0, server.log()
